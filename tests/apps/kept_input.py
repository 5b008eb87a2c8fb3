"""Keeps the wsgi.input, start_response and write() of requests to /keep,
and says whether a later request's are among those kept (they must never
be: the server may reuse these objects only when nothing else holds them).
/late calls the last kept start_response and write(), whose request is
over, and answers what each raised."""

kept = []
writes = []


def late(start_response, write):
    said = []
    for call in (lambda: start_response("200 OK", []), lambda: write(b"late")):
        try:
            call()
            said.append("no error")
        except Exception as e:
            said.append("%s: %s" % (type(e).__name__, e))
    return "\n".join(said).encode()


def app(environ, start_response):
    inp = environ["wsgi.input"]
    body = inp.read()
    reused = any(k is inp or k is start_response for k in kept)
    if environ["PATH_INFO"] == "/late":
        out = late(kept[-1], writes[-1])
    else:
        out = b"%s %s" % (b"reused" if reused else b"fresh", body)
    write = start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
    if environ["PATH_INFO"] == "/keep":
        kept.extend([inp, start_response])
        writes.append(write)
    return [out]
