"""Real image bytes for the fakes: small solid images of a given size, and big PNGs."""

from __future__ import annotations

import functools
import io
import math
import os

from PIL import Image

_PIL_FORMAT = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


@functools.lru_cache(maxsize=64)
def solid_image(width: int, height: int, output_format: str = "png") -> bytes:
    """A solid-colour image (compresses to almost nothing, encodes fast)."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (40, 120, 200)).save(buffer, format=_PIL_FORMAT[output_format])
    return buffer.getvalue()


def size_for_ratio(ratio: str, longer_side: int = 1024) -> tuple[int, int]:
    """Pixel size for an aspect ratio label such as '16:9' with the given longer side."""
    width, height = (int(part) for part in ratio.split(":"))
    if width >= height:
        return longer_side, max(1, round(longer_side * height / width))
    return max(1, round(longer_side * width / height)), longer_side


def big_png(target_bytes: int = 30 * 1024 * 1024) -> bytes:
    """An incompressible, valid PNG of about `target_bytes` (random pixels, no compression)."""
    side = int(math.sqrt(target_bytes / 3))
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=0)
    return buffer.getvalue()
