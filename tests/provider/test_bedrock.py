"""Bedrock adapter through provider_svc, against the fake Bedrock Runtime (real boto3)."""

from __future__ import annotations

import logging
import re

import pytest

from quantized.common.v1 import images_pb2
from quantized_runtime.errors import Reason
from tests.fake_upstreams.bedrock import (
    ALL_BLOCKED_MESSAGE,
    INPUT_BLOCKED_MESSAGE,
    NOVA,
    SOME_BLOCKED_MESSAGE,
    STABILITY_MODELS,
    TITAN,
)
from tests.provider.conftest import Harness

ALL_OPTIONAL = dict(quality="hd", style="vivid", background="transparent", output_format="jpeg",
                    output_compression=80, moderation="low", seed=42, negative_prompt="blurry",
                    user="student-17")


@pytest.mark.parametrize(("model", "size", "width", "height"), [
    (TITAN, "1920x1080", 1152, 640),
    (TITAN, "1000x600", 1280, 768),
    (TITAN, "300x300", 512, 512),
    (NOVA, "1920x1080", 1936, 1088),
    (NOVA, "2048x2048", 2032, 2032),
])
async def test_titan_and_nova_bodies(harness: Harness, model: str, size: str, width: int, height: int) -> None:
    response = await harness.generate(model, size=size, n=2, **ALL_OPTIONAL)

    assert harness.bedrock.last.path == f"/model/{model}/invoke"
    assert harness.bedrock.last.json() == {
        "taskType": "TEXT_IMAGE",
        "textToImageParams": {"text": "a hedgehog under a mushroom", "negativeText": "blurry"},
        "imageGenerationConfig": {"numberOfImages": 2, "width": width, "height": height,
                                  "quality": "premium", "seed": 42},
    }
    assert harness.bedrock.regions() == ["us-east-1"]
    assert [image.mime_type for image in response.images] == ["image/png", "image/png"]
    assert all(not image.HasField("seed") and not image.HasField("revised_prompt") for image in response.images)
    assert response.created == 0
    assert response.usage.megapixels == pytest.approx(width * height * 2 / 1e6)
    assert not response.usage.HasField("input_tokens")


async def test_titan_without_optional_fields_sends_only_the_required_ones(harness: Harness) -> None:
    await harness.generate(TITAN, quality="auto")

    assert harness.bedrock.last.json() == {
        "taskType": "TEXT_IMAGE", "textToImageParams": {"text": "a hedgehog under a mushroom"},
        "imageGenerationConfig": {"numberOfImages": 1, "width": 1024, "height": 1024}}


@pytest.mark.parametrize("model", STABILITY_MODELS)
async def test_stability_bodies_go_to_us_west_2_and_echo_the_seed(harness: Harness, model: str) -> None:
    response = await harness.generate(model, size="1080x1920", **ALL_OPTIONAL)

    assert harness.bedrock.last.path == f"/model/{model}/invoke"
    assert harness.bedrock.last.json() == {"prompt": "a hedgehog under a mushroom", "mode": "text-to-image",
                                           "aspect_ratio": "9:16", "negative_prompt": "blurry", "seed": 42,
                                           "output_format": "jpeg"}
    assert harness.bedrock.regions() == ["us-west-2"]
    [image] = response.images
    assert image.seed == 42 and image.mime_type == "image/jpeg"
    assert response.usage.megapixels == pytest.approx(576 * 1024 / 1e6)


async def test_stability_drops_webp_and_defaults_the_region(harness: Harness) -> None:
    await harness.generate(STABILITY_MODELS[0], output_format="webp", region="")

    body = harness.bedrock.last.json()
    assert "output_format" not in body and body["aspect_ratio"] == "1:1"
    assert harness.bedrock.regions() == ["us-west-2"]


async def test_one_client_per_region(harness: Harness) -> None:
    await harness.generate(TITAN, region="eu-west-1")
    await harness.generate(TITAN, region="us-east-1")
    assert harness.bedrock.regions() == ["eu-west-1", "us-east-1"]


async def test_input_content_filter_flags_every_requested_image(harness: Harness) -> None:
    harness.bedrock.then(harness.bedrock.input_blocked())

    response = await harness.generate(NOVA, n=3, watermark=images_pb2.WATERMARK_PROVENANCE)

    assert [image.flagged for image in response.images] == [True, True, True]
    assert all(image.flag_reason == INPUT_BLOCKED_MESSAGE and image.image_data == b"" for image in response.images)
    assert all(image.watermark == images_pb2.WATERMARK_PROVENANCE for image in response.images)
    assert response.usage.megapixels == 0


async def test_all_output_blocked_is_a_flagged_success_with_no_images(harness: Harness) -> None:
    harness.bedrock.then(harness.bedrock.output_all_blocked)

    response = await harness.generate(TITAN, n=2)

    assert [(image.flagged, image.flag_reason, image.image_data) for image in response.images] == [
        (True, ALL_BLOCKED_MESSAGE, b""), (True, ALL_BLOCKED_MESSAGE, b"")]


async def test_some_output_blocked_keeps_the_survivors_and_flags_the_rest(harness: Harness) -> None:
    harness.bedrock.then(harness.bedrock.output_some_blocked)

    response = await harness.generate(TITAN, n=3)

    assert [image.flagged for image in response.images] == [False, False, True]
    assert response.images[2].flag_reason == SOME_BLOCKED_MESSAGE
    assert response.usage.megapixels == pytest.approx(2 * 1024 * 1024 / 1e6)


@pytest.mark.parametrize("reason", ["Filter reason: prompt", "Filter reason: output image"])
async def test_stability_filter_reasons_flag_the_image(harness: Harness, reason: str) -> None:
    harness.bedrock.then(harness.bedrock.stability_finish(reason))

    response = await harness.generate(STABILITY_MODELS[1])

    [image] = response.images
    assert image.flagged and image.flag_reason == reason and image.image_data == b""
    assert response.usage.megapixels == 0


async def test_stability_inference_error_is_retried_as_an_upstream_failure(harness: Harness) -> None:
    harness.bedrock.always(harness.bedrock.stability_finish("Inference error"))

    failure = await harness.fail(STABILITY_MODELS[2])

    assert failure.reason == Reason.UPSTREAM_UNAVAILABLE
    assert len(harness.bedrock.requests) == 3


@pytest.mark.parametrize(("name", "upstream_text"), [
    ("ValidationException", "ValidationException: Malformed input request"),
    ("ResourceNotFoundException", "ResourceNotFoundException: Model not found."),
])
async def test_a_rejection_names_the_upstream_and_logs_its_text(harness: Harness, caplog, name: str,
                                                                upstream_text: str) -> None:
    harness.bedrock.always(harness.bedrock.error(name))

    with caplog.at_level(logging.WARNING, logger="quantized.provider.upstream"):
        failure = await harness.fail(TITAN)

    assert failure.reason == Reason.UPSTREAM_REJECTED
    assert re.fullmatch(r"the bedrock upstream rejected the request \(request id \S+\)", failure.message)
    assert upstream_text.split(": ")[1] not in failure.message
    logged = [record for record in caplog.records if record.getMessage() == "upstream rejected the request"]
    [logged_text] = [record.fields["upstream_message"] for record in logged]
    assert logged_text.startswith(upstream_text)
    assert len(harness.bedrock.requests) == 1


@pytest.mark.parametrize(("name", "reason", "message"), [
    ("ServiceQuotaExceededException", Reason.UPSTREAM_UNAVAILABLE, "bedrock: service quota exceeded"),
    ("AccessDeniedException", Reason.UPSTREAM_UNAVAILABLE, "bedrock: access to the model is denied"),
    ("UnrecognizedClientException", Reason.UPSTREAM_UNAVAILABLE,
     "bedrock: upstream rejected our credentials (UnrecognizedClientException)"),
    ("ModelTimeoutException", Reason.UPSTREAM_UNAVAILABLE, "bedrock: upstream timed out"),
    ("ModelErrorException", Reason.UPSTREAM_UNAVAILABLE, "bedrock: the model failed"),
])
async def test_errors_that_are_not_retried(harness: Harness, name: str, reason: Reason, message: str) -> None:
    harness.bedrock.always(harness.bedrock.error(name))

    failure = await harness.fail(TITAN)

    assert failure.reason == reason
    assert failure.message.startswith(message)
    assert len(harness.bedrock.requests) == 1
    assert "fake-secret-access-key" not in failure.message


@pytest.mark.parametrize("name", ["ThrottlingException", "ModelNotReadyException", "InternalServerException",
                                  "ServiceUnavailableException"])
async def test_throttling_and_5xx_are_retried_by_the_service_only(harness: Harness, name: str) -> None:
    harness.bedrock.always(harness.bedrock.error(name))

    failure = await harness.fail(NOVA)

    assert failure.reason == Reason.UPSTREAM_UNAVAILABLE
    assert failure.message.startswith(f"bedrock: upstream {name}")
    # botocore's own retries are off: exactly one attempt plus the service's two retries.
    assert len(harness.bedrock.requests) == 3


async def test_throttling_then_success(harness: Harness) -> None:
    harness.bedrock.then(harness.bedrock.error("ThrottlingException"))

    response = await harness.generate(NOVA)

    assert len(response.images) == 1 and len(harness.bedrock.requests) == 2


async def test_a_slow_upstream_times_out(harness_factory) -> None:
    harness = await harness_factory(upstream_timeout_seconds=0.3)
    harness.bedrock.delay_seconds = 2

    failure = await harness.fail(TITAN)

    assert failure.message == "bedrock: upstream timed out"


async def test_missing_credentials_fail_the_call(harness_factory, monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    harness = await harness_factory()

    failure = await harness.fail(TITAN)

    assert failure.reason == Reason.UPSTREAM_UNAVAILABLE
    assert failure.message == "bedrock: no credentials configured"
    assert harness.bedrock.requests == []


async def test_a_slow_bedrock_call_does_not_block_the_event_loop(harness: Harness) -> None:
    import asyncio

    harness.bedrock.hold()
    slow = asyncio.ensure_future(harness.generate(TITAN))
    while not harness.bedrock.requests:
        await asyncio.sleep(0.01)

    # boto3 blocks a pool thread, not the loop: another call is served meanwhile.
    quick = await harness.generate("sandbox-image-1", size="16x16")

    assert len(quick.images) == 1 and not slow.done()
    harness.bedrock.release()
    assert len((await slow).images) == 1


async def test_a_malformed_body_is_an_upstream_failure(harness: Harness) -> None:
    from tests.fake_upstreams import Reply

    harness.bedrock.then(Reply(200, b"[]", {"Content-Type": "application/json"}))

    failure = await harness.fail(TITAN)

    assert failure.reason == Reason.UPSTREAM_UNAVAILABLE
    assert failure.message == "bedrock: upstream returned a malformed body"
