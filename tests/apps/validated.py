"""A small app wrapped in wsgiref.validate.validator, which raises
AssertionError on anything that breaks PEP 3333 (server side included: the
environ, wsgi.input, start_response, and close() of the iterable)."""

from wsgiref.validate import validator


def _app(environ, start_response):
    path = environ["PATH_INFO"]
    method = environ["REQUEST_METHOD"]
    text = [("Content-Type", "text/plain")]
    if path == "/":
        start_response("200 OK", text)
        return [b"index"]
    if path == "/gen":
        start_response("200 OK", text)
        return (b"part-%d;" % i for i in range(3))
    if path == "/query":
        start_response("200 OK", text)
        return [environ["QUERY_STRING"].encode("latin-1")]
    if path == "/form" and method == "POST":
        n = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(n)
        start_response("200 OK", text)
        return [body.upper()]
    if path == "/lines" and method == "POST":
        inp = environ["wsgi.input"]
        first = inp.readline()
        rest = inp.readlines()
        start_response("200 OK", text)
        return [b"%d|%s" % (len(rest) + 1, first.strip())]
    if path == "/write":
        write = start_response("200 OK", text)
        write(b"written;")
        return [b"returned"]
    if path == "/empty":
        start_response("204 No Content", [])
        return []
    if path == "/log":
        environ["wsgi.errors"].write("validated-marker\n")
        environ["wsgi.errors"].flush()
        start_response("200 OK", text)
        return [b"logged"]
    if path == "/bad":
        # Deliberately wrong: proves the validator is active in this server.
        start_response("200 OK", text)
        return ["a str body"]
    start_response("404 Not Found", text)
    return [b"not found"]


application = validator(_app)
