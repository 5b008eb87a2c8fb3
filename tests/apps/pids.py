"""For the prefork master's tests: every answer names the worker process
that gave it.

/sleep?s=S&id=X logs `slow-start X pid=PID` to wsgi.errors, sleeps S seconds
and answers `slept X pid=PID`; anything else answers `pid=PID` at once."""

import os
import time
from urllib.parse import parse_qs


def app(environ, start_response):
    pid = os.getpid()
    if environ["PATH_INFO"] == "/sleep":
        qs = parse_qs(environ.get("QUERY_STRING", ""))
        ident = qs.get("id", [""])[0]
        environ["wsgi.errors"].write("slow-start %s pid=%d\n" % (ident, pid))
        environ["wsgi.errors"].flush()
        time.sleep(float(qs.get("s", ["1"])[0]))
        body = ("slept %s pid=%d" % (ident, pid)).encode()
    else:
        body = ("pid=%d" % pid).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
