"""Serves a value from a module that only exists in the test's virtualenv;
/sys answers which Python it runs as (prefix, executable, sys.path)."""

import json
import sys

import zibai_venv_probe


def app(environ, start_response):
    if environ["PATH_INFO"] == "/sys":
        body = json.dumps({"prefix": sys.prefix, "executable": sys.executable, "path": sys.path}).encode()
    else:
        body = zibai_venv_probe.VALUE.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
