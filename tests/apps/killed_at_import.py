"""Killed by SIGKILL while it is imported, every time, as by the OOM killer
or a crash in a C extension at import: for the start's boot-failure rule."""

import os
import signal

os.kill(os.getpid(), signal.SIGKILL)


def app(environ, start_response):
    start_response("200 OK", [])
    return [b"never"]
