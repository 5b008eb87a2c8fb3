"""The smallest WSGI app: `zibai examples.hello:app` (or `cd examples && zibai hello:app`)."""


def app(environ, start_response):
    body = b"Hello, world!"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
