"""An app whose import takes a second: for boot deadlines."""

import os
import time

time.sleep(1)


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"pid=%d" % os.getpid()]
