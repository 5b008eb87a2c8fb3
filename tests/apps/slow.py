"""/sleep?s=S&id=X logs `slow-start X` to wsgi.errors, sleeps S seconds and
answers `slept X`; /stream?s=S&id=X sends `part one,` then logs
`stream-start X`, sleeps S seconds and ends with ` part two` (chunked);
anything else answers `fast` at once."""

import time
from urllib.parse import parse_qs


def _stream(environ, ident, secs):
    yield b"part one,"
    environ["wsgi.errors"].write("stream-start %s\n" % ident)
    environ["wsgi.errors"].flush()
    time.sleep(secs)
    yield b" part two"


def app(environ, start_response):
    qs = parse_qs(environ.get("QUERY_STRING", ""))
    if environ["PATH_INFO"] == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _stream(environ, qs.get("id", [""])[0], float(qs.get("s", ["1"])[0]))
    if environ["PATH_INFO"] == "/sleep":
        ident = qs.get("id", [""])[0]
        environ["wsgi.errors"].write("slow-start %s\n" % ident)
        environ["wsgi.errors"].flush()
        time.sleep(float(qs.get("s", ["1"])[0]))
        body = ("slept %s" % ident).encode()
    else:
        body = b"fast"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
