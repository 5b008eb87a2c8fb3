"""Keeps the wsgi.input of requests to /keep, and says whether a later
request's wsgi.input is one of those kept (it must never be: the server may
reuse the object only when nothing else holds it)."""

kept = []


def app(environ, start_response):
    inp = environ["wsgi.input"]
    body = inp.read()
    reused = any(k is inp for k in kept)
    if environ["PATH_INFO"] == "/keep":
        kept.append(inp)
    out = b"%s %s" % (b"reused" if reused else b"fresh", body)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
    return [out]
