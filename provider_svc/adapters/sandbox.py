"""The sandbox: a development provider that renders real images locally.

No credentials, no network. Images are deterministic: the same prompt, seed,
size, format and position give the same bytes. The catalog lists "any" size for
it: "auto" renders the default size; sides are clamped to sizes.MAX_SIDE.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
import time

from PIL import Image as PILImage

from provider_svc.domain import GenerationResult, Image, ImageRequest, UpstreamDeadline, UpstreamUsage
from provider_svc.families import Family
from provider_svc.policy import forwardable
from provider_svc.sizes import fit_size

PROVIDER = "sandbox"
_PALETTE_SIDE = 8
_MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_PIL_FORMAT = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


def render(prompt: str, seed: int | None, width: int, height: int, index: int,
           output_format: str = "png") -> bytes:
    """A smooth colour field derived from the inputs, encoded in `output_format`."""
    digest = hashlib.sha256(f"{prompt}\x00{seed}\x00{index}".encode()).digest()
    rng = random.Random(digest)
    palette = PILImage.new("RGB", (_PALETTE_SIDE, _PALETTE_SIDE))
    palette.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256))
                     for _ in range(_PALETTE_SIDE * _PALETTE_SIDE)])
    image = palette.resize((width, height), PILImage.Resampling.BICUBIC)
    buffer = io.BytesIO()
    options = {"quality": 90} if output_format in {"jpeg", "webp"} else {"compress_level": 1}
    image.save(buffer, format=_PIL_FORMAT[output_format], **options)
    return buffer.getvalue()


class SandboxAdapter:
    provider = PROVIDER

    async def generate(self, request: ImageRequest, deadline: UpstreamDeadline) -> GenerationResult:
        size = fit_size(request.size, request.sizes, request.size_range)
        fields = forwardable(request, Family.SANDBOX)
        output_format = fields.get("output_format", "png")
        seed = fields.get("seed")
        count = max(request.n, 1)
        blobs = await asyncio.to_thread(
            lambda: [render(request.prompt, seed, size.width, size.height, index, output_format)
                     for index in range(count)])
        return GenerationResult(
            created=int(time.time()),
            images=[Image(data=blob, mime_type=_MIME[output_format], seed=seed) for blob in blobs],
            usage=UpstreamUsage(megapixels=size.width * size.height * count / 1e6),
        )

    async def close(self) -> None:
        return None
