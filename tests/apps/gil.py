"""/hold?s=S logs `holding` to wsgi.errors, then sleeps S seconds in a C
call that keeps the GIL (ctypes.PyDLL does not release it), as a stuck C
extension would; anything else answers `ok`."""

import ctypes


def app(environ, start_response):
    if environ["PATH_INFO"] == "/hold":
        secs = int(environ.get("QUERY_STRING", "s=30").partition("=")[2] or 30)
        environ["wsgi.errors"].write("holding\n")
        environ["wsgi.errors"].flush()
        ctypes.PyDLL(None).sleep(secs)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
