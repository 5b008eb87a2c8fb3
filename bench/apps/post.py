"""post scenario: reads the whole request body (64 KiB from bench/post64k.lua) and
answers with its length, so a short read shows up as a wrong body."""


def app(environ, start_response):
    remaining = int(environ.get("CONTENT_LENGTH") or 0)
    stream = environ["wsgi.input"]
    got = 0
    while remaining > 0:
        data = stream.read(min(remaining, 65536))
        if not data:
            break
        got += len(data)
        remaining -= len(data)
    body = str(got).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
