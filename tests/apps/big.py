"""A deterministic 10 MiB body (see util::big_body) served three ways:

    /list   a list of 160 chunks, no Content-Length from the app
    /gen    a generator of the same chunks, no Content-Length
    /file   wsgi.file_wrapper over a file in $ZIBAI_TEST_TMP
    /file-noread  the same over a file whose read() raises (sendfile only)
    /bytesio  wsgi.file_wrapper over an io.BytesIO (no fileno: iterated)
    /small  a few bytes, to check other clients are still served
"""

import hashlib
import io
import os

BASE = bytes(range(256)) * 256
CHUNKS = [k.to_bytes(4, "big") + BASE[4:] for k in range(160)]
SHA256 = hashlib.sha256(b"".join(CHUNKS)).hexdigest()


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


def app(environ, start_response):
    path = environ["PATH_INFO"]
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
    if path == "/file-with-length":
        f = open(big_file(), "rb")
        start_response("200 OK", headers + [("Content-Length", str(len(CHUNKS) * 65536))])
        return environ["wsgi.file_wrapper"](f, 65536)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"small"]
