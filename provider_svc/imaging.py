"""Facts read from image bytes: MIME type from the magic number, pixel size from
the header (Pillow reads only the header, not the pixels)."""

from __future__ import annotations

import binascii
import io

import pybase64
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
)


def sniff_mime(data: bytes, fallback: str = "image/png") -> str:
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return fallback


def pixel_size(data: bytes) -> tuple[int, int]:
    """(width, height), or (0, 0) when the bytes are not a readable image."""
    try:
        with PILImage.open(io.BytesIO(data)) as image:
            return image.size
    except (UnidentifiedImageError, OSError, ValueError):
        return (0, 0)


def megapixels(images: list[bytes]) -> float:
    """Rendered megapixels: the sum of width*height over the images, / 1e6."""
    return sum(w * h for w, h in map(pixel_size, images)) / 1e6


def decode_b64(text: str | bytes) -> bytes:
    try:
        return pybase64.b64decode(text, validate=False)
    except (binascii.Error, ValueError):
        return b""
