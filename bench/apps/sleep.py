"""sleep scenario: each request sleeps 10 ms (a stand-in for a database call) and
answers 13 bytes. Measures how many requests a server overlaps: with T app threads
per process the ceiling is T / 10 ms = 100 x T requests/s per process."""

import time

BODY = b"Hello, world!"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def app(environ, start_response):
    time.sleep(0.010)
    start_response("200 OK", HEADERS)
    return [BODY]
