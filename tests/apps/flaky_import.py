"""Dies while being imported (exit code 1, a crash, not a boot failure)
the first three times in a test's run, then works: a run of early deaths
that ends."""

import os

_path = os.path.join(os.environ["ZIBAI_TEST_TMP"], "flaky-imports")
with open(_path, "a") as f:
    f.write("x")
with open(_path) as f:
    if len(f.read()) <= 3:
        os._exit(1)


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"pid=%d" % os.getpid()]
