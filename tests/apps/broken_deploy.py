"""Fails to import (a RuntimeError: exit code 4) while
$ZIBAI_TEST_TMP/broken exists, as a bad deploy would; answers pid=N."""

import os

if os.path.exists(os.path.join(os.environ["ZIBAI_TEST_TMP"], "broken")):
    raise RuntimeError("broken deploy")


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"pid=%d" % os.getpid()]
