"""Dies while being imported (exit code 1) two times out of three, counted
across the test's workers: crashes at the start that are not in a row."""

import os

_path = os.path.join(os.environ["ZIBAI_TEST_TMP"], "imports")
with open(_path, "a") as f:
    f.write("x")
with open(_path) as f:
    if len(f.read()) % 3 != 0:
        os._exit(1)


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"pid=%d" % os.getpid()]
