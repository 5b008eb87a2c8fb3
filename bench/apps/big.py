"""big scenario: a 1 MiB body as a list holding one bytes object, with a Content-Length."""

BODY = b"x" * (1 << 20)
HEADERS = [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(BODY)))]


def app(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]
