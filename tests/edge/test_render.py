"""Base64 of large images, encoded a slice at a time."""

from __future__ import annotations

import base64
import os

import pytest

from edge.render import BASE64_SLICE_BYTES, Base64Text


@pytest.mark.parametrize("size", [0, 1, 2, 3, BASE64_SLICE_BYTES - 1, BASE64_SLICE_BYTES,
                                  BASE64_SLICE_BYTES + 1, 2 * BASE64_SLICE_BYTES + 2])
def test_the_pieces_join_into_the_base64_of_the_whole(size: int) -> None:
    data = os.urandom(size)
    text = Base64Text(data)
    pieces = list(text.pieces())
    assert b"".join(pieces) == base64.b64encode(data)
    assert len(text) == len(base64.b64encode(data))
    assert all(len(piece) <= 4 * BASE64_SLICE_BYTES // 3 for piece in pieces)
