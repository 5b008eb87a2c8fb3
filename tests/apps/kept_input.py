"""Keeps the wsgi.input and start_response of requests to /keep, and says
whether a later request's are among those kept (they must never be: the
server may reuse these objects only when nothing else holds them)."""

kept = []


def app(environ, start_response):
    inp = environ["wsgi.input"]
    body = inp.read()
    reused = any(k is inp or k is start_response for k in kept)
    if environ["PATH_INFO"] == "/keep":
        kept.extend([inp, start_response])
    out = b"%s %s" % (b"reused" if reused else b"fresh", body)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
    return [out]
