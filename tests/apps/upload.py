"""Hashes the request body, read in 64 KiB pieces with read(n)."""

import hashlib


def app(environ, start_response):
    inp = environ["wsgi.input"]
    h = hashlib.sha256()
    total = 0
    pieces = 0
    while True:
        chunk = inp.read(65536)
        if not chunk:
            break
        assert len(chunk) <= 65536
        h.update(chunk)
        total += len(chunk)
        pieces += 1
    data = ("len=%d\nsha256=%s\npieces=%d\n" % (total, h.hexdigest(), pieces)).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]
