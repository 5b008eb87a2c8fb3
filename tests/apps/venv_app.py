"""Serves a value from a module that only exists in the test's virtualenv."""

import zibai_venv_probe


def app(environ, start_response):
    body = zibai_venv_probe.VALUE.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
