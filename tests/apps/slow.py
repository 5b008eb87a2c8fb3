"""/sleep?s=S&id=X logs `slow-start X` to wsgi.errors, sleeps S seconds and
answers `slept X`; anything else answers `fast` at once."""

import time
from urllib.parse import parse_qs


def app(environ, start_response):
    qs = parse_qs(environ.get("QUERY_STRING", ""))
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
