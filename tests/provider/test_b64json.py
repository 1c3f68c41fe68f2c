"""Parsing base64-heavy JSON bodies without a str copy of the body."""

from __future__ import annotations

import base64
import json
import os

from provider_svc.b64json import loads_with_blobs

IMAGE = os.urandom(3000)
ENCODED = base64.b64encode(IMAGE).decode()


def body(**extra: object) -> dict:
    return {"created": 7, "data": [{"b64_json": ENCODED, "revised_prompt": 'says "b64_json": "no"'},
                                   {"b64_json": ENCODED}], "usage": {"total_tokens": 3}, **extra}


def test_values_become_indexes_into_the_decoded_blobs() -> None:
    document, blobs = loads_with_blobs(json.dumps(body()).encode(), "b64_json")

    assert document == {"created": 7, "data": [{"b64_json": 0, "revised_prompt": 'says "b64_json": "no"'},
                                               {"b64_json": 1}], "usage": {"total_tokens": 3}}
    assert blobs == [IMAGE, IMAGE]


def test_compact_and_spaced_layouts_and_bytearrays() -> None:
    compact = bytearray(json.dumps(body(), separators=(",", ":")).encode())
    spaced = json.dumps(body(), indent=2).encode()
    for raw in (compact, spaced):
        document, blobs = loads_with_blobs(raw, "b64_json")
        assert document["data"][1] == {"b64_json": 1} and blobs == [IMAGE, IMAGE]


def test_escaped_slashes_fall_back_to_the_plain_parser() -> None:
    raw = json.dumps(body()).encode().replace(b"/", b"\\/")

    document, blobs = loads_with_blobs(raw, "b64_json")

    assert blobs == [IMAGE, IMAGE] and document["data"][0]["b64_json"] == 0


def test_a_body_without_the_key_is_parsed_as_is() -> None:
    assert loads_with_blobs(b'{"error": {"code": "x"}}', "b64_json") == ({"error": {"code": "x"}}, [])
