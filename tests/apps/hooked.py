"""An app with before_serve hooks that make trouble; answers pid=N.

    slow_hook    logs `hook-start PID` to stderr, then sleeps 3 s if
                 $ZIBAI_TEST_TMP/slow-hook exists (so the first boot is quick)
    lock_hook    takes an exclusive lock on $ZIBAI_TEST_TMP/hook.lock and
                 keeps it: the second worker's hook fails (exit 3)
"""

import fcntl
import os
import sys
import time

_TMP = os.environ["ZIBAI_TEST_TMP"]
_held = []


def slow_hook():
    sys.stderr.write("hook-start %d\n" % os.getpid())
    sys.stderr.flush()
    if os.path.exists(os.path.join(_TMP, "slow-hook")):
        time.sleep(3)


def lock_hook():
    f = open(os.path.join(_TMP, "hook.lock"), "w")
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    _held.append(f)


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"pid=%d" % os.getpid()]
