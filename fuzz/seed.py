#!/usr/bin/env python3
"""Seeds fuzz/corpus/{request_head,chunked} from the test corpora in
tests/corpus (gunicorn's requests and smuggler's Transfer-Encoding gadgets),
and fuzz/corpus/{response_head,forwarded} with a few typical inputs.
fuzz/corpus is git-ignored: run this once before fuzzing."""
import hashlib
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent
CORPUS = ROOT.parent / "tests" / "corpus"
ESCAPES = {b"r": b"\r", b"n": b"\n", b"t": b"\t", b"0": b"\0"}


def decode_http(raw: bytes) -> bytes:
    raw = raw.replace(b"\n", b"")
    out, i = bytearray(), 0
    while i < len(raw):
        if raw[i:i + 1] != b"\\":
            out += raw[i:i + 1]
            i += 1
        elif raw[i + 1:i + 2] == b"x":
            out.append(int(raw[i + 2:i + 4], 16))
            i += 4
        else:
            out += ESCAPES[raw[i + 1:i + 2]]
            i += 2
    return bytes(out)


def save(target: str, data: bytes) -> None:
    directory = ROOT / "corpus" / target
    directory.mkdir(parents=True, exist_ok=True)
    (directory / hashlib.sha1(data).hexdigest()).write_bytes(data)


for path in sorted((CORPUS / "gunicorn-requests").glob("*/*.http")):
    data = decode_http(path.read_bytes())
    save("request_head", data)
    head_end = data.find(b"\r\n\r\n")
    if b"chunked" in data[:head_end].lower() and head_end >= 0:
        body = data[head_end + 4:]
        # The chunked target's first byte picks where the input is split.
        for first in (0, 97, 255):
            save("chunked", bytes([first]) + body)

gadgets = json.loads((CORPUS / "smuggler-te-gadgets" / "te_gadgets.json").read_text())
for section in gadgets.values():
    for hexed in section["gadgets"].values():
        gadget = bytes.fromhex(hexed)
        save("request_head", b"POST / HTTP/1.1\r\n" + gadget + b"\r\nHost: x\r\n\r\n0\r\n\r\n")

# response_head: status, then header names and values, split at 0xff.
for parts in ([b"200 OK", b"Content-Type", b"text/plain", b"Content-Length", b"13"],
              [b"404 Not Found", b"Set-Cookie", b"a=b; Path=/", b"X-Empty", b""],
              [b"200 ", b"Content-Length", b" 007 ", b"X-Obs", b"caf\xc3\xa9\tx"]):
    save("response_head", b"\xff".join(parts))

# forwarded: a trusted list (first byte: one of the target's fixed lists, or
# past them the text up to the first 0xff), then X-Forwarded-For values.
for data in (b"\x02" + b"\xff".join([b"1.2.3.4, 127.0.0.1", b"127.0.0.1"]),
             b"\x03" + b"\xff".join([b"unknown, 203.0.113.9:4711", b"10.0.0.2", b"[::1]:80"]),
             b"\x04" + b"\xff".join([b"2001:db8::1", b"::ffff:10.1.1.1", b"https", b"on"]),
             b"\x09" + b"\xff".join([b"10.0.0.0/8, ::1, *", b"198.51.100.7", b"10.9.9.9"])):
    save("forwarded", data)
