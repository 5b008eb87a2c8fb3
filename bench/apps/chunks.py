"""chunks scenario: a generator yielding 100 chunks of 1 KiB, no Content-Length
(HTTP/1.1 servers send it chunked; each chunk is a separate write opportunity)."""

CHUNK = b"x" * 1024
HEADERS = [("Content-Type", "application/octet-stream")]


def body():
    for _ in range(100):
        yield CHUNK


def app(environ, start_response):
    start_response("200 OK", HEADERS)
    return body()
