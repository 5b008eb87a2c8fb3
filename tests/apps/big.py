"""A deterministic 10 MiB body (see util::big_body) served three ways:

    /list   a list of 160 chunks, no Content-Length from the app
    /gen    a generator of the same chunks, no Content-Length
    /file   wsgi.file_wrapper over a file in $ZIBAI_TEST_TMP
    /file-noread  the same over a file whose read() raises (sendfile only)
    /file-short-length  /file under a Content-Length of 1000
    /bytesio  wsgi.file_wrapper over an io.BytesIO (no fileno: iterated)
    /small  a few bytes, to check other clients are still served
    /gzip   wsgi.file_wrapper over a gzip file object (fileno() is the
            compressed file's: its read() must be what is sent)
    /proc   wsgi.file_wrapper over /proc/self/status (st_size 0)
    /wrapper-attrs  a wrapper's public filelike and blksize, as text
    /shared-file    wsgi.file_wrapper over the big file, kept in a global
                    as a cached file object would be
    /swap-shared    closes that file object (from another request's thread)
                    and opens another file on its descriptor number
    /tell-swaps     wsgi.file_wrapper over the big file opened as a
                    BufferedReader whose tell() does the same to itself (as
                    another thread could while tell() has the GIL released)

Streamed bodies of mixed block sizes (see util::mixed_body), no Content-Length:

    /mixed?n=N      N blocks, the first 3 through write(), the rest from a
                    generator (&cl=1: with their Content-Length; &small=1:
                    only blocks under 64 KiB)
    /write-file     write(b"written;"), then wsgi.file_wrapper over the big
                    file (?cl=1: with the Content-Length of both; ?cl=file:
                    with the file's alone, 8 bytes short)
"""

import hashlib
import io
import os

BASE = bytes(range(256)) * 256
CHUNKS = [k.to_bytes(4, "big") + BASE[4:] for k in range(160)]
SHA256 = hashlib.sha256(b"".join(CHUNKS)).hexdigest()


class TellSwaps(io.BufferedReader):
    def tell(self):
        n = self.fileno()
        fd = os.open(_other_file(), os.O_RDONLY)
        if fd != n:
            os.dup2(fd, n)
            os.close(fd)
        return 0


def _other_file():
    other = os.path.join(os.environ["ZIBAI_TEST_TMP"], "other.bin")
    with open(other, "wb") as o:
        o.write(b"not the big file" * 65536)
    return other


class NoRead(io.FileIO):
    def read(self, *args):
        raise AssertionError("read() called: the server did not use sendfile")


def big_file():
    path = os.path.join(os.environ["ZIBAI_TEST_TMP"], "big.bin")
    if not os.path.exists(path):
        tmp = path + ".%d" % os.getpid()
        with open(tmp, "wb") as f:
            for c in CHUNKS:
                f.write(c)
        os.replace(tmp, path)
    return path


MIXED_SIZES = [1, 1000, 70000, 7, 65536, 300, 4096, 150000, 20, 2000]
# Only blocks the flusher takes (under 64 KiB).
SMALL_SIZES = [1, 1000, 7, 300, 4096, 20, 2000]


def mixed_block(i, sizes=MIXED_SIZES):
    n = sizes[i % len(sizes)]
    tag = b"%d:" % i
    return (tag * (n // len(tag) + 1))[:n]


def mixed(environ, start_response, n, cl, sizes):
    headers = [("Content-Type", "application/octet-stream")]
    if cl:
        headers.append(("Content-Length", str(sum(len(mixed_block(i, sizes)) for i in range(n)))))
    write = start_response("200 OK", headers)
    for i in range(min(3, n)):
        write(mixed_block(i, sizes))
    return (mixed_block(i, sizes) for i in range(3, n))


SHARED = {}


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/shared-file":
        f = open(big_file(), "rb")
        SHARED["f"] = f
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](f, 65536)
    if path == "/tell-swaps":
        f = TellSwaps(io.FileIO(big_file(), "rb"))
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](f, 65536)
    if path == "/swap-shared":
        f = SHARED.pop("f")
        n = f.fileno()
        f.close()
        # Whichever file the kernel gives the freed number next; here one
        # is put there on purpose (the lowest free number may be another).
        fd = os.open(_other_file(), os.O_RDONLY)
        if fd != n:
            os.dup2(fd, n)
            os.close(fd)
        SHARED["other"] = n
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"reused"]
    query = dict(p.split("=", 1) for p in environ.get("QUERY_STRING", "").split("&") if "=" in p)
    if path == "/mixed":
        sizes = SMALL_SIZES if "small" in query else MIXED_SIZES
        return mixed(environ, start_response, int(query.get("n", "200")), "cl" in query, sizes)
    if path == "/write-file":
        f = open(big_file(), "rb")
        headers = [("Content-Type", "application/octet-stream")]
        if "cl" in query:
            extra = 0 if query["cl"] == "file" else len(b"written;")
            headers.append(("Content-Length", str(extra + len(CHUNKS) * 65536)))
        write = start_response("200 OK", headers)
        write(b"written;")
        return environ["wsgi.file_wrapper"](f, 65536)
    headers = [("Content-Type", "application/octet-stream"), ("X-Sha256", SHA256)]
    if path == "/list":
        start_response("200 OK", headers)
        return list(CHUNKS)
    if path == "/gen":
        start_response("200 OK", headers)
        return (c for c in CHUNKS)
    if path == "/file":
        f = open(big_file(), "rb")
        start_response("200 OK", headers)
        return environ["wsgi.file_wrapper"](f, 65536)
    if path == "/file-noread":
        # A real file whose Python-level read() fails: only sendfile(2) can
        # serve it.
        f = NoRead(big_file(), "rb")
        start_response("200 OK", headers)
        return environ["wsgi.file_wrapper"](f, 65536)
    if path == "/bytesio":
        start_response("200 OK", headers)
        return environ["wsgi.file_wrapper"](io.BytesIO(b"".join(CHUNKS)), 65536)
    if path == "/gzip":
        import gzip

        gz = os.path.join(os.environ["ZIBAI_TEST_TMP"], "small.gz")
        with gzip.open(gz, "wb") as f:
            f.write(b"decompressed " * 10)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](gzip.open(gz, "rb"), 65536)
    if path == "/proc":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](open("/proc/self/status", "rb"), 65536)
    if path == "/wrapper-attrs":
        inner = io.BytesIO(b"x")
        w = environ["wsgi.file_wrapper"](inner, 4096)
        text = "%s %d" % (w.filelike is inner, w.blksize)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [text.encode()]
    if path == "/file-short-length":
        f = open(big_file(), "rb")
        start_response("200 OK", headers + [("Content-Length", "1000")])
        return environ["wsgi.file_wrapper"](f, 65536)
    if path == "/file-with-length":
        f = open(big_file(), "rb")
        start_response("200 OK", headers + [("Content-Length", str(len(CHUNKS) * 65536))])
        return environ["wsgi.file_wrapper"](f, 65536)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"small"]
