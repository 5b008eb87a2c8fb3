"""A worker that dies 0.2 s after it booted, every time: for the master's
back-off of repeated early deaths."""

import os
import threading
import time


def _die():
    time.sleep(0.2)
    os._exit(7)


threading.Thread(target=_die, daemon=True).start()


def app(environ, start_response):
    start_response("200 OK", [])
    return [b"alive for now"]
