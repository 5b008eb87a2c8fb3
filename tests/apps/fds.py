"""Records, at import time (in a worker: before it serves), the open file
descriptors of the process that imports it: a line `pid=PID`, then one line
`fd=N,CLOEXEC,TARGET` per fd, CLOEXEC being 1 when FD_CLOEXEC is set and
TARGET what /proc/self/fd/N points at (`socket:[INODE]`, a path...).

The lines are written to $ZIBAI_TEST_TMP/fds-PID.txt (so a test can read
every worker's, not only the one that answers) and are the app's answer."""

import fcntl
import os


def _snapshot():
    lines = ["pid=%d" % os.getpid()]
    for name in sorted(os.listdir("/proc/self/fd"), key=int):
        fd = int(name)
        try:
            flags = fcntl.fcntl(fd, fcntl.F_GETFD)
            target = os.readlink("/proc/self/fd/%d" % fd)
        except OSError:
            # The directory listdir had open, closed since.
            continue
        lines.append("fd=%d,%d,%s" % (fd, 1 if flags & fcntl.FD_CLOEXEC else 0, target))
    return "\n".join(lines) + "\n"


SNAPSHOT = _snapshot()

_tmp = os.environ.get("ZIBAI_TEST_TMP")
if _tmp:
    _path = os.path.join(_tmp, "fds-%d.txt" % os.getpid())
    with open(_path + ".part", "w") as f:
        f.write(SNAPSHOT)
    os.rename(_path + ".part", _path)


def app(environ, start_response):
    body = SNAPSHOT.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
