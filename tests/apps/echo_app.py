"""Echoes the request back as `key=value` lines, for the environ tests.

Every str value of the environ is one line, escaped with `unicode_escape` so a
non-ASCII character shows as `\\xe9` and a newline as `\\n`; non-str values of
interest are shown with repr(). The body is read as the query string says:

    read=all (default)   wsgi.input.read()
    read=none            not read at all
    read=n&n=N[&max=M]   read(N) until empty (at most M pieces)
    read=line            readline() until empty
    read=linen&n=N       readline(N) until empty
    read=lines           readlines()
    read=lines0          readlines(0) (no hint, as io's)
    read=read1           read1() once
    read=iter            for line in wsgi.input
    read=exact           read(int(CONTENT_LENGTH))

Each piece the app got is one `_piece=` line, the whole body is `_body=`.
`log=TEXT` writes TEXT to wsgi.errors first.
"""

from urllib.parse import parse_qs


def esc(s):
    return s.encode("unicode_escape").decode("ascii")


def read_body(environ, qs):
    inp = environ["wsgi.input"]
    mode = qs.get("read", ["all"])[0]
    n = int(qs.get("n", ["3"])[0])
    most = int(qs.get("max", ["1000000"])[0])
    pieces = []
    if mode == "all":
        pieces.append(inp.read())
    elif mode == "none":
        pass
    elif mode == "exact":
        pieces.append(inp.read(int(environ.get("CONTENT_LENGTH") or 0)))
    elif mode in ("n", "line", "linen"):
        while len(pieces) < most:
            if mode == "n":
                p = inp.read(n)
            elif mode == "line":
                p = inp.readline()
            else:
                p = inp.readline(n)
            if not p:
                break
            pieces.append(p)
    elif mode == "lines":
        pieces.extend(inp.readlines())
    elif mode == "lines0":
        pieces.extend(inp.readlines(0))
    elif mode == "read1":
        pieces.append(inp.read1())
    elif mode == "iter":
        pieces.extend(inp)
    else:
        raise ValueError("unknown read mode %r" % mode)
    for p in pieces:
        assert type(p) is bytes, type(p)
    return pieces


def app(environ, start_response):
    qs = parse_qs(environ.get("QUERY_STRING", ""))
    if "log" in qs:
        environ["wsgi.errors"].write(qs["log"][0] + "\n")
        environ["wsgi.errors"].flush()
    pieces = read_body(environ, qs)
    lines = []
    for k in sorted(environ):
        v = environ[k]
        if isinstance(v, str):
            lines.append("%s=%s" % (k, esc(v)))
        elif isinstance(v, (bool, int, tuple)):
            lines.append("%s=%r" % (k, v))
    for p in pieces:
        lines.append("_piece=%s" % esc(p.decode("latin-1")))
    lines.append("_body=%s" % esc(b"".join(pieces).decode("latin-1")))
    data = ("\n".join(lines) + "\n").encode("ascii")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]
