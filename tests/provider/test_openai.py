"""OpenAI adapter through provider_svc, against the fake Images API (real httpx)."""

from __future__ import annotations

import logging

import io

import pytest
from PIL import Image

from quantized.common.v1 import images_pb2
from quantized_runtime.errors import Reason
from tests.fake_upstreams.openai import API_KEY
from tests.provider.conftest import Harness

ALL_OPTIONAL = dict(quality="hd", style="vivid", background="transparent", output_format="webp",
                    output_compression=80, moderation="low", seed=42, negative_prompt="blurry",
                    user="student-17")


async def test_gpt_image_1_forwards_its_own_fields_and_drops_the_rest(harness: Harness) -> None:
    response = await harness.generate("gpt-image-1", size="3840x2160", **ALL_OPTIONAL)

    body = harness.openai.last.json()
    assert body == {"model": "gpt-image-1", "prompt": "a hedgehog under a mushroom", "n": 1,
                    "size": "1536x1024", "quality": "high", "background": "transparent",
                    "output_format": "webp", "output_compression": 80, "moderation": "low",
                    "user": "student-17"}
    assert "response_format" not in body
    [image] = response.images
    assert image.mime_type == "image/webp"
    assert not image.HasField("revised_prompt") and not image.HasField("seed")
    assert response.created == 1776443191
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == (
        238, 4160, 4398)
    assert not response.usage.HasField("megapixels")


async def test_dall_e_3_keeps_style_maps_quality_and_returns_the_revised_prompt(harness: Harness) -> None:
    response = await harness.generate("dall-e-3", size="1000x1800", **ALL_OPTIONAL)

    assert harness.openai.last.json() == {"model": "dall-e-3", "prompt": "a hedgehog under a mushroom",
                                          "n": 1, "size": "1024x1792", "quality": "hd", "style": "vivid",
                                          "user": "student-17"}
    [image] = response.images
    assert image.revised_prompt == "A detailed rendering of: a hedgehog under a mushroom"
    assert image.mime_type == "image/png"
    assert not response.usage.HasField("input_tokens")


async def test_dall_e_2_gets_only_prompt_n_size_and_user(harness: Harness) -> None:
    response = await harness.generate("dall-e-2", size="300x200", n=3, **ALL_OPTIONAL)

    assert harness.openai.last.json() == {"model": "dall-e-2", "prompt": "a hedgehog under a mushroom",
                                          "n": 3, "size": "256x256", "user": "student-17"}
    assert len(response.images) == 3
    assert all(not image.HasField("revised_prompt") for image in response.images)


@pytest.mark.parametrize(("quality", "gpt_image", "dall_e_3"), [
    ("standard", "medium", "standard"), ("hd", "high", "hd"), ("low", "low", "standard"),
    ("medium", "medium", "standard"), ("high", "high", "hd"), ("auto", "auto", None),
])
async def test_quality_is_mapped_per_family(harness: Harness, quality: str, gpt_image: str,
                                            dall_e_3: str | None) -> None:
    await harness.generate("gpt-image-1", quality=quality)
    assert harness.openai.last.json()["quality"] == gpt_image
    await harness.generate("dall-e-3", quality=quality)
    assert harness.openai.last.json().get("quality") == dall_e_3


async def test_auto_size_is_kept_for_gpt_image_and_defaulted_for_dall_e(harness: Harness) -> None:
    await harness.generate("gpt-image-1", size="auto")
    assert harness.openai.last.json()["size"] == "auto"
    await harness.generate("dall-e-3", size="auto")
    assert harness.openai.last.json()["size"] == "1024x1024"


async def test_compression_is_dropped_for_png(harness: Harness) -> None:
    await harness.generate("gpt-image-1", output_format="png", output_compression=50)
    body = harness.openai.last.json()
    assert body["output_format"] == "png" and "output_compression" not in body


async def test_the_api_key_travels_as_a_bearer_token(harness: Harness) -> None:
    await harness.generate("gpt-image-1")
    assert harness.openai.last.headers["authorization"] == f"Bearer {API_KEY}"
    assert harness.openai.last.path == "/v1/images/generations"


async def test_a_30_mb_image_passes_intact(harness: Harness) -> None:
    from tests.fake_upstreams import big_png

    big = big_png()
    harness.openai.image_override = big
    response = await harness.generate("gpt-image-1", size="1024x1024", timeout=60)

    [image] = response.images
    assert len(image.image_data) >= 30 * 1024 * 1024
    assert image.image_data == big
    with Image.open(io.BytesIO(image.image_data)) as decoded:
        assert decoded.format == "PNG"


@pytest.mark.parametrize(("name", "reason", "fragment"), [
    ("invalid_api_key", Reason.UPSTREAM_UNAVAILABLE, "openai: upstream rejected our credentials (invalid_api_key)"),
    ("organization_not_verified", Reason.UPSTREAM_UNAVAILABLE, "openai: organisation verification required"),
    ("insufficient_quota", Reason.UPSTREAM_UNAVAILABLE, "openai: upstream quota exhausted"),
    ("unknown_model", Reason.UPSTREAM_REJECTED, "the openai upstream rejected the request (request id "),
    ("invalid_value", Reason.UPSTREAM_REJECTED, "the openai upstream rejected the request (request id "),
])
async def test_errors_that_are_not_retried(harness: Harness, name: str, reason: Reason, fragment: str) -> None:
    harness.openai.always(harness.openai.error(name))

    failure = await harness.fail("gpt-image-1")

    assert failure.reason == reason
    assert fragment in failure.message
    assert len(harness.openai.requests) == 1
    assert API_KEY not in failure.message and API_KEY[:8] not in failure.message


@pytest.mark.parametrize(("name", "upstream_text"), [
    ("unknown_model", "Invalid value: 'gpt-image-9'"),
    ("invalid_value", "Invalid value: '999x999'"),
])
async def test_the_upstreams_own_text_goes_to_the_log_only(harness: Harness, caplog, name: str,
                                                           upstream_text: str) -> None:
    harness.openai.always(harness.openai.error(name))

    with caplog.at_level(logging.WARNING, logger="quantized.provider.upstream"):
        failure = await harness.fail("gpt-image-1")

    assert upstream_text not in failure.message
    [logged] = [record for record in caplog.records if record.getMessage() == "upstream rejected the request"]
    assert upstream_text in logged.fields["upstream_message"]
    assert API_KEY not in logged.fields["upstream_message"]


@pytest.mark.parametrize("name", ["rate_limit", "server_error", "service_unavailable"])
async def test_429_and_5xx_are_retried_then_succeed(harness: Harness, name: str) -> None:
    harness.openai.then(harness.openai.error(name), harness.openai.error(name))

    response = await harness.generate("gpt-image-1")

    assert len(response.images) == 1
    assert len(harness.openai.requests) == 3


async def test_retries_are_bounded(harness: Harness) -> None:
    harness.openai.always(harness.openai.error("rate_limit"))

    failure = await harness.fail("gpt-image-1")

    assert failure.reason == Reason.UPSTREAM_UNAVAILABLE
    assert failure.message == "openai: rate limited by upstream (rate_limit_exceeded)"
    assert len(harness.openai.requests) == 3  # one attempt + upstream_retries (2)


@pytest.mark.parametrize(("name", "reason"), [
    ("moderation_blocked", "moderation_blocked (input: violence)"),
    ("content_policy_violation", "content_policy_violation"),
])
async def test_content_filter_blocks_become_flagged_images(harness: Harness, name: str, reason: str) -> None:
    harness.openai.then(harness.openai.error(name))

    response = await harness.generate("gpt-image-1", watermark=images_pb2.WATERMARK_C2PA)

    [image] = response.images
    assert image.flagged and image.flag_reason == reason
    assert image.image_data == b"" and image.watermark == images_pb2.WATERMARK_C2PA


async def test_a_slow_upstream_times_out_within_the_deadline(harness_factory) -> None:
    harness = await harness_factory(upstream_timeout_seconds=0.3)
    harness.openai.delay_seconds = 2

    failure = await harness.fail("gpt-image-1")

    assert failure.reason == Reason.UPSTREAM_UNAVAILABLE
    assert failure.message == "openai: upstream timed out"
    assert len(harness.openai.requests) == 1


async def test_the_grpc_deadline_bounds_the_upstream_call(harness_factory) -> None:
    harness = await harness_factory(upstream_timeout_seconds=30)
    harness.openai.delay_seconds = 2

    failure = await harness.fail("gpt-image-1", timeout=0.5)

    # The caller's time left fires before the upstream timeout: provider_svc stops waiting on the upstream.
    assert failure.reason == Reason.UPSTREAM_UNAVAILABLE
    assert failure.message == "openai: upstream timed out"


async def test_missing_credentials_fail_the_call_not_the_start(harness_factory) -> None:
    harness = await harness_factory(openai_api_key=None)

    failure = await harness.fail("gpt-image-1")

    assert failure.reason == Reason.UPSTREAM_UNAVAILABLE
    assert failure.message == "openai: no credentials configured"
    assert harness.openai.requests == []


async def test_an_unreachable_upstream_is_unavailable(harness_factory) -> None:
    harness = await harness_factory(openai_base_url="http://127.0.0.1:9/v1")

    failure = await harness.fail("gpt-image-1")

    assert failure.reason == Reason.UPSTREAM_UNAVAILABLE
    assert failure.message.startswith("openai: could not reach upstream")


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"data": [{"url": "https://example.invalid/x.png"}]}'])
async def test_a_malformed_success_body_is_an_upstream_failure(harness: Harness, body: bytes) -> None:
    from tests.fake_upstreams import Reply

    harness.openai.then(Reply(200, body, {"Content-Type": "application/json"}))

    failure = await harness.fail("dall-e-3")

    assert failure.reason == Reason.UPSTREAM_UNAVAILABLE
    assert failure.message in ("openai: upstream returned a malformed body",
                                     "openai: upstream returned an image without data")
