"""For the operator toolbox tests (toolbox.rs): what the serving process is
and what it sees. Answers are `key=value` lines unless said otherwise.

/ids                 uid, gid, euid, egid, groups (sorted, comma-separated), pid
/umask-file?name=N   creates $ZIBAI_TEST_TMP/N with os.open(..., 0o666) and
                     answers its permission bits in octal (mode=0640)
/sys-path            the first three entries of sys.path (path0= path1= path2=)
/env?key=K           value=os.environ[K], or missing=K
/cwd                 cwd=os.getcwd()
/hdr                 the body `hdr`, with the response header X-Out: yes
/empty               a 200 with an empty body
/sleep?ms=N          sleeps N milliseconds, then answers `slept`
/hop                 `hop`, with a hop-by-hop Keep-Alive header the server drops
/errors?text=T       writes T and a newline to wsgi.errors, answers `written`
/raise               raises RuntimeError("toolbox-boom")
"""

import os
import sys
import time
from urllib.parse import parse_qs


def answer(start_response, body, headers=()):
    if isinstance(body, str):
        body = body.encode("utf-8")
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))] + list(headers),
    )
    return [body]


def app(environ, start_response):
    path = environ["PATH_INFO"]
    qs = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/ids":
        groups = ",".join(str(g) for g in sorted(os.getgroups()))
        return answer(
            start_response,
            "uid=%d\ngid=%d\neuid=%d\negid=%d\ngroups=%s\npid=%d\n"
            % (os.getuid(), os.getgid(), os.geteuid(), os.getegid(), groups, os.getpid()),
        )
    if path == "/umask-file":
        target = os.path.join(os.environ["ZIBAI_TEST_TMP"], qs["name"][0])
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        os.close(fd)
        return answer(start_response, "mode=%04o\n" % (os.stat(target).st_mode & 0o7777))
    if path == "/sys-path":
        lines = ["path%d=%s" % (i, p) for i, p in enumerate(sys.path[:3])]
        return answer(start_response, "\n".join(lines) + "\n")
    if path == "/env":
        key = qs["key"][0]
        if key in os.environ:
            return answer(start_response, "value=%s\n" % os.environ[key])
        return answer(start_response, "missing=%s\n" % key)
    if path == "/cwd":
        return answer(start_response, "cwd=%s\n" % os.getcwd())
    if path == "/hdr":
        return answer(start_response, "hdr", [("X-Out", "yes")])
    if path == "/empty":
        return answer(start_response, b"")
    if path == "/sleep":
        time.sleep(int(qs["ms"][0]) / 1000.0)
        return answer(start_response, "slept")
    if path == "/hop":
        return answer(start_response, "hop", [("Keep-Alive", "timeout=5")])
    if path == "/errors":
        environ["wsgi.errors"].write(qs["text"][0] + "\n")
        environ["wsgi.errors"].flush()
        return answer(start_response, "written")
    if path == "/raise":
        raise RuntimeError("toolbox-boom")
    return answer(start_response, "toolbox pid=%d" % os.getpid())
