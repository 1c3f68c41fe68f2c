"""The sandbox development provider: real images, deterministic, no credentials."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from quantized.common.v1 import images_pb2
from tests.provider.conftest import Harness

SANDBOX = "sandbox-image-1"


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize(("output_format", "pil_format", "mime"), [
    (None, "PNG", "image/png"), ("png", "PNG", "image/png"), ("jpeg", "JPEG", "image/jpeg"),
    ("webp", "WEBP", "image/webp")])
async def test_renders_the_requested_size_and_format(harness: Harness, output_format: str | None,
                                                     pil_format: str, mime: str) -> None:
    extra = {"output_format": output_format} if output_format else {}
    response = await harness.generate(SANDBOX, size="320x200", n=2, watermark=images_pb2.WATERMARK_NONE, **extra)

    assert len(response.images) == 2
    for image in response.images:
        picture = decoded(image.image_data)
        assert (picture.format, picture.size, image.mime_type) == (pil_format, (320, 200), mime)
        assert not image.flagged and image.watermark == images_pb2.WATERMARK_NONE
    assert response.images[0].image_data != response.images[1].image_data
    assert response.created > 0
    assert response.usage.megapixels == pytest.approx(320 * 200 * 2 / 1e6)


async def test_same_inputs_give_the_same_bytes(harness: Harness) -> None:
    first = await harness.generate(SANDBOX, prompt="a fox", seed=7, size="64x64")
    second = await harness.generate(SANDBOX, prompt="a fox", seed=7, size="64x64")
    other_seed = await harness.generate(SANDBOX, prompt="a fox", seed=8, size="64x64")
    other_prompt = await harness.generate(SANDBOX, prompt="a badger", seed=7, size="64x64")

    assert first.images[0].image_data == second.images[0].image_data
    assert first.images[0].image_data != other_seed.images[0].image_data
    assert first.images[0].image_data != other_prompt.images[0].image_data
    assert first.images[0].seed == 7


async def test_auto_is_1024_square_and_absurd_sizes_are_clamped(harness: Harness) -> None:
    auto = await harness.generate(SANDBOX, size="auto")
    assert decoded(auto.images[0].image_data).size == (1024, 1024)

    clamped = await harness.generate(SANDBOX, size="99999x2", output_format="jpeg")
    assert decoded(clamped.images[0].image_data).size == (4096, 2)


async def test_needs_no_credentials(harness_factory) -> None:
    harness = await harness_factory(openai_api_key=None, gemini_api_key=None, vertex_api_key=None)
    response = await harness.generate(SANDBOX, size="16x16")
    assert len(response.images) == 1
