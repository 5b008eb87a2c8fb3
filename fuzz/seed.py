#!/usr/bin/env python3
"""Seeds fuzz/corpus/{request_head,chunked} from the test corpora in
tests/corpus (gunicorn's requests and smuggler's Transfer-Encoding gadgets).
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
