"""JSON bodies that carry big base64 images, parsed without a str copy of the body.

`json.loads` on a body carrying a large image holds the raw bytes, a decoded str
of the whole body and the parsed strings at once, several times the image. Here
each string value of `key` is base64-decoded straight from the raw bytes
(pybase64, SIMD, far faster than binascii on large strings), and only the small
rest of the document goes through `json.loads`. Figures: docs/benchmarks.md.
"""

from __future__ import annotations

import binascii
import json
import re
from typing import Any

import pybase64

_WHITESPACE = re.compile(rb"\s*")


def loads_with_blobs(raw: bytes | bytearray, key: str) -> tuple[Any, list[bytes]]:
    """Parse `raw`; every `"key": "<base64>"` value becomes an int index into the
    returned list of decoded bytes. Falls back to plain json.loads (decoding each
    value the slow way) when the layout is not the simple one."""
    marker = json.dumps(key).encode()
    view = memoryview(raw)
    skeleton: list[bytes | bytearray] = []
    blobs: list[bytes] = []
    position = 0
    search_from = 0
    while True:
        found = raw.find(marker, search_from)
        if found < 0:
            break
        cursor = _WHITESPACE.match(raw, found + len(marker)).end()
        if raw[cursor:cursor + 1] != b":":
            search_from = found + len(marker)
            continue
        cursor = _WHITESPACE.match(raw, cursor + 1).end()
        if raw[cursor:cursor + 1] != b'"':
            search_from = found + len(marker)
            continue
        end = raw.find(b'"', cursor + 1)
        if end < 0:
            return _slow(raw, key)
        try:
            # validate: a JSON escape (say "\/") inside the value is not base64,
            # so such a body takes the slow path instead of decoding wrongly.
            blobs.append(pybase64.b64decode(view[cursor + 1:end], validate=True))
        except (binascii.Error, ValueError):
            del view
            return _slow(raw, key)
        skeleton.append(raw[position:cursor])
        skeleton.append(str(len(blobs) - 1).encode())
        position = search_from = end + 1
    skeleton.append(raw[position:])
    del view
    return json.loads(b"".join(skeleton)), blobs


def _slow(raw: bytes | bytearray, key: str) -> tuple[Any, list[bytes]]:
    document = json.loads(raw)
    blobs: list[bytes] = []

    def replace(node: Any) -> None:
        if isinstance(node, dict):
            for name, value in node.items():
                if name == key and isinstance(value, str):
                    blobs.append(pybase64.b64decode(value))
                    node[name] = len(blobs) - 1
                else:
                    replace(value)
        elif isinstance(node, list):
            for item in node:
                replace(item)

    replace(document)
    return document, blobs
