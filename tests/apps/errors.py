"""Apps that get WSGI wrong, one per path; /ok works."""

import sys


def app(environ, start_response):
    path = environ["PATH_INFO"]
    text = [("Content-Type", "text/plain")]
    if path == "/ok":
        start_response("200 OK", text)
        return [b"ok"]
    if path == "/before":
        raise RuntimeError("boom-before-start-response")
    if path == "/after-start":
        start_response("200 OK", text)
        raise RuntimeError("boom-after-start-response")
    if path == "/mid":
        start_response("200 OK", text)

        def gen():
            yield b"first-chunk;"
            raise RuntimeError("boom-mid-stream")

        return gen()
    if path == "/empty-then-raise":
        start_response("200 OK", text)

        def gen():
            # An empty chunk sends nothing, so a 500 is still possible.
            yield b""
            raise RuntimeError("boom-after-an-empty-chunk")

        return gen()
    if path == "/str":
        start_response("200 OK", text)
        return ["a str, not bytes"]
    if path == "/bad-status":
        start_response("200", text)
        return [b"bad status"]
    if path == "/status-1xx":
        start_response("100 Continue", text)
        return [b"not a final status"]
    if path == "/bad-status-word":
        start_response("OK 200", text)
        return [b"bad status"]
    if path == "/crlf":
        start_response("200 OK", text + [("X-Bad", "a\r\nX-Injected: 1")])
        return [b"crlf"]
    if path == "/twice":
        start_response("200 OK", text)
        start_response("201 Created", text)
        return [b"twice"]
    if path == "/exc-info":
        start_response("200 OK", text)
        try:
            raise ValueError("handled-by-exc-info")
        except ValueError:
            start_response("500 Oops", text, sys.exc_info())
        return [b"replaced"]
    if path == "/exc-info-late":
        write = start_response("200 OK", text)
        write(b"already-sent;")
        try:
            raise ValueError("reraised-by-exc-info")
        except ValueError:
            start_response("500 Oops", text, sys.exc_info())
        return [b"never"]
    if path == "/none":
        start_response("200 OK", text)
        return None
    if path == "/status-latin1":
        start_response("200 \u00c7a va", text)
        return [b"latin-1 reason"]
    if path == "/status-not-latin1":
        start_response("200 \u2713", text)
        return [b"never"]
    if path == "/own-date-server":
        start_response(
            "200 OK",
            text + [("date", "Tue, 01 Jan 2030 00:00:00 GMT"), ("Server", "app/1")],
        )
        return [b"own"]
    if path == "/204-with-length":
        # As Django's CommonMiddleware does.
        start_response("204 No Content", [("Content-Length", "0")])
        return []
    if path == "/exc-info-after-whole-body":
        start_response("200 OK", text + [("Content-Length", "5")])

        def gen():
            # The body is whole: the server holds it for its last write.
            yield b"hello"
            try:
                raise ValueError("too-late-for-exc-info")
            except ValueError:
                start_response("500 Oops", text + [("Content-Length", "3")], sys.exc_info())
            yield b"err"

        return gen()
    if path == "/205-with-body":
        start_response("205 Reset Content", text + [("Content-Length", "4")])
        return [b"body"]
    if path == "/raise-after-last":
        start_response("200 OK", text + [("Content-Length", "6")])

        def gen():
            yield b"abc"
            yield b"def"
            raise RuntimeError("boom-after-the-last-chunk")

        return gen()
    if path == "/raise-after-only":
        start_response("200 OK", text + [("Content-Length", "3")])

        def gen():
            yield b"abc"
            raise RuntimeError("boom-after-the-only-chunk")

        return gen()
    start_response("404 Not Found", text)
    return [b"not found"]
