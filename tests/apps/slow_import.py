"""An app whose import takes 30 s: for --boot-timeout."""

import time

time.sleep(30)


def app(environ, start_response):
    start_response("200 OK", [])
    return [b"never"]
