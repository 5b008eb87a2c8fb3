"""Response framing and close() tracking.

    /gen?n=N        a generator of N chunks `chunk-i;`, no Content-Length
    /write          the write() callable, then a returned body
    /short          Content-Length: 10 but 5 bytes sent
    /long           Content-Length: 5 but 10 bytes sent
    /fixed          a list body with an app Content-Length
    /status?code=C  status C with a body the server must drop (204, 304)
    /tracked?id=X   a generator whose close() records X
    /tracked-list?id=X  a list subclass whose close() records X
    /forever?id=X   streams 64 KiB chunks forever; close() records X
                    (&size=N: chunks of N bytes; &cl=N: with Content-Length N)
    /write-in-close?id=X  a list body whose close() calls write(); records
                    X with the outcome (`X:raised` or `X:written`)
    /raise-mid?id=X yields one chunk, then raises; close() records X
    /closed?id=X    "yes" once close() was called for X, else "no"
    /gen-cl?n=N     a generator of N chunks `chunk-i;` with their Content-Length
    /head-empty     as /gen?n=3, but no body at all for HEAD (as Werkzeug
                    answers HEAD for a streamed response)
    /long-gen       a generator sending 10 bytes under Content-Length: 5
    /long-write     the same through three write() calls
    /gated?id=X     a generator: `first;`, then waits (up to 10 s) for
                    /release?id=X, then `second;` (&cl=1: with a Content-Length)
    /release?id=X   lets /gated?id=X go on
    /done-then-gated?id=X  a generator with its Content-Length: its whole
                    body, then waits (up to 10 s) for /release?id=X
    /endless-gen-cl a generator under Content-Length: 5 that never ends
    /wrapped-done-then-gated?id=X  /done-then-gated's generator inside an
                    iterator of the framework's (as Werkzeug's
                    ClosingIterator wraps stream_with_context)
    /close-gated?id=X  a whole list body whose close() waits (up to 10 s)
                    for /release?id=X (as Django's request_finished
                    handlers run from close())
    /write-past-cl?id=X  a wrapped generator that yields its whole
                    Content-Length, then calls write(b"") (records
                    `X:empty-ok` if that passes) and write(b"oops");
                    records `X:raised` or `X:written`
    /write-then-read  write(b"early;"), then reads the body and returns
                    b"read:" + body
    /thread-read?id=X  a thread of the app's own reads the whole body, and
                    the app answers 202 once that thread is inside its
                    read; records `X:read-N`, N the bytes it read
    /thread-write?id=X  a thread of the app's own calls write() with 64 MiB
                    and the app returns [] once that thread is inside it;
                    records `X:written` or `X:failed`
"""

import threading
import time
from urllib.parse import parse_qs

GATES = {}
GATES_LOCK = threading.Lock()


def gate(ident):
    with GATES_LOCK:
        return GATES.setdefault(ident, threading.Event())


def until_busy(call, timeout=10):
    """Calls `call` (a method of wsgi.input or write()) until it raises
    because another thread is inside a call of the same object (pyo3's
    "Already borrowed"), or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            call()
        except RuntimeError:
            return
        time.sleep(0.005)


def gated(ident):
    yield b"first;"
    gate(ident).wait(10)
    yield b"second;"


def endless():
    while True:
        yield b"12345"


def done_then_gated(ident):
    yield b"whole;"
    gate(ident).wait(10)


class Wrapped:
    """A framework's iterator around the app's body, like Werkzeug's
    ClosingIterator."""

    def __init__(self, inner):
        self.inner = iter(inner)

    def __iter__(self):
        return self

    def __next__(self):
        return next(self.inner)

    def close(self):
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()


class GatedClose(list):
    def close(self):
        gate(self.ident).wait(10)


def write_past_cl(ident, write):
    yield b"12345"
    try:
        write(b"")
        CLOSED.add(ident + ":empty-ok")
    except RuntimeError:
        pass
    try:
        write(b"oops")
        CLOSED.add(ident + ":written")
    except RuntimeError:
        CLOSED.add(ident + ":raised")


CLOSED = set()
CHUNK = b"z" * 65536


class Tracked:
    def __init__(self, ident, items, forever=False, raise_after=None, chunk=CHUNK):
        self.ident = ident
        self.chunk = chunk
        self.items = list(items)
        self.forever = forever
        self.raise_after = raise_after
        self.sent = 0

    def __iter__(self):
        return self

    def __next__(self):
        if self.forever:
            return self.chunk
        if self.raise_after is not None and self.sent >= self.raise_after:
            raise RuntimeError("raise-mid for %s" % self.ident)
        if not self.items:
            raise StopIteration
        self.sent += 1
        return self.items.pop(0)

    def close(self):
        CLOSED.add(self.ident)


class TrackedList(list):
    def close(self):
        CLOSED.add(self.ident)


def app(environ, start_response):
    path = environ["PATH_INFO"]
    qs = parse_qs(environ.get("QUERY_STRING", ""))
    ident = qs.get("id", [""])[0]
    text = [("Content-Type", "text/plain")]
    if path == "/gen":
        n = int(qs.get("n", ["3"])[0])
        start_response("200 OK", text)
        return (("chunk-%d;" % i).encode() for i in range(n))
    if path == "/head-empty":
        start_response("200 OK", text)
        if environ["REQUEST_METHOD"] == "HEAD":
            return []
        return (("chunk-%d;" % i).encode() for i in range(3))
    if path == "/write":
        write = start_response("200 OK", text)
        write(b"written-1;")
        write(b"written-2;")
        return [b"returned"]
    if path == "/short":
        start_response("200 OK", text + [("Content-Length", "10")])
        return [b"12345"]
    if path == "/long":
        start_response("200 OK", text + [("Content-Length", "5")])
        return [b"12345", b"67890"]
    if path == "/fixed":
        start_response("200 OK", text + [("Content-Length", "5")])
        return [b"fixed"]
    if path == "/status":
        code = qs.get("code", ["204"])[0]
        start_response("%s Whatever" % code, text)
        return [b"this body must not be sent"]
    if path == "/tracked":
        start_response("200 OK", text)
        return Tracked(ident, [b"a", b"b", b"c"])
    if path == "/tracked-list":
        start_response("200 OK", text)
        body = TrackedList([b"listed"])
        body.ident = ident
        return body
    if path == "/forever":
        cl = [("Content-Length", qs["cl"][0])] if "cl" in qs else []
        start_response("200 OK", text + cl)
        size = int(qs.get("size", [str(len(CHUNK))])[0])
        return Tracked(ident, [], forever=True, chunk=b"z" * size)
    if path == "/raise-mid":
        start_response("200 OK", text)
        return Tracked(ident, [b"first;", b"second;"], raise_after=1)
    if path == "/gen-cl":
        n = int(qs.get("n", ["3"])[0])
        chunks = [("chunk-%d;" % i).encode() for i in range(n)]
        start_response("200 OK", text + [("Content-Length", str(sum(map(len, chunks))))])
        return iter(chunks)
    if path == "/long-write":
        write = start_response("200 OK", text + [("Content-Length", "5")])
        write(b"12345")
        write(b"678")
        write(b"90")
        return []
    if path == "/long-gen":
        start_response("200 OK", text + [("Content-Length", "5")])
        return iter([b"12345", b"67890"])
    if path == "/gated":
        cl = [("Content-Length", "13")] if "cl" in qs else []
        start_response("200 OK", text + cl)
        return gated(ident)
    if path == "/endless-gen-cl":
        start_response("200 OK", text + [("Content-Length", "5")])
        return endless()
    if path == "/done-then-gated":
        start_response("200 OK", text + [("Content-Length", "6")])
        return done_then_gated(ident)
    if path == "/wrapped-done-then-gated":
        start_response("200 OK", text + [("Content-Length", "6")])
        return Wrapped(done_then_gated(ident))
    if path == "/close-gated":
        start_response("200 OK", text + [("Content-Length", "6")])
        body = GatedClose([b"whole;"])
        body.ident = ident
        return body
    if path == "/write-past-cl":
        write = start_response("200 OK", text + [("Content-Length", "5")])
        return Wrapped(write_past_cl(ident, write))
    if path == "/thread-read":
        body = environ["wsgi.input"]
        size = int(environ.get("CONTENT_LENGTH") or 0)
        started = threading.Event()

        def read_all():
            started.set()
            got = 0
            try:
                while got < size:
                    block = body.read(min(65536, size - got))
                    if not block:
                        break
                    got += len(block)
            except Exception:
                pass
            CLOSED.add("%s:read-%d" % (ident, got))

        threading.Thread(target=read_all, daemon=True).start()
        started.wait(10)
        # Until it is inside its read, which waits for the rest of the body.
        until_busy(lambda: body.read(0))
        start_response("202 Accepted", text)
        return [b"accepted"]
    if path == "/thread-write":
        write = start_response("200 OK", text)
        started = threading.Event()

        def run():
            started.set()
            try:
                write(b"x" * (64 << 20))
                CLOSED.add(ident + ":written")
            except Exception:
                CLOSED.add(ident + ":failed")

        threading.Thread(target=run, daemon=True).start()
        started.wait(10)
        # Until it is inside its write, which the client (reading nothing)
        # holds up.
        until_busy(lambda: write(b""))
        return []
    if path == "/release":
        gate(ident).set()
        start_response("200 OK", text)
        return [b"released"]
    if path == "/write-then-read":
        write = start_response("200 OK", text)
        write(b"early;")
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        return [b"read:" + body]
    if path == "/write-in-close":
        write = start_response("200 OK", text)

        class Late(list):
            def close(self):
                try:
                    write(b"late")
                    CLOSED.add(ident + ":written")
                except RuntimeError:
                    CLOSED.add(ident + ":raised")

        return Late([b"whole body"])
    if path == "/closed":
        body = b"yes" if ident in CLOSED else b"no"
        start_response("200 OK", text)
        return [body]
    start_response("404 Not Found", text)
    return [b"not found"]
