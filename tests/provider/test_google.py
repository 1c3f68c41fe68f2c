"""Gemini Flash Image (Developer API) and Imagen 4 (Vertex AI) through provider_svc,
against the fake Google endpoints with the real google-genai SDK."""

from __future__ import annotations

import logging
import re

import pytest

from quantized.common.v1 import images_pb2
from quantized_runtime.errors import Reason
from tests.fake_upstreams.google import ACCESS_TOKEN, FLASH_IMAGE, GEMINI_API_KEY, IMAGEN_MODELS, VERTEX_API_KEY
from tests.provider.conftest import Harness, generate_once, generate_request

ALL_OPTIONAL = dict(quality="hd", style="vivid", background="transparent", output_format="jpeg",
                    output_compression=80, moderation="low", seed=42, negative_prompt="blurry",
                    user="student-17")
IMAGEN, IMAGEN_FAST, IMAGEN_ULTRA = IMAGEN_MODELS


async def test_flash_image_sends_only_the_prompt_and_aspect_ratio(harness: Harness) -> None:
    response = await harness.generate(FLASH_IMAGE, size="1920x1080", watermark=images_pb2.WATERMARK_SYNTHID,
                                      **ALL_OPTIONAL)

    request = harness.google.last
    assert request.path == f"/v1/models/{FLASH_IMAGE}:generateContent"
    assert request.headers["x-goog-api-key"] == GEMINI_API_KEY
    assert request.json() == {
        "contents": [{"parts": [{"text": "a hedgehog under a mushroom"}], "role": "user"}],
        "generationConfig": {"responseModalities": ["TEXT", "IMAGE"], "imageConfig": {"aspectRatio": "16:9"}},
    }
    [image] = response.images
    assert image.mime_type == "image/png" and image.image_data.startswith(b"\x89PNG")
    assert image.revised_prompt == "Here is your image of a hedgehog under a mushroom."
    assert image.watermark == images_pb2.WATERMARK_SYNTHID and not image.HasField("seed")
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == (
        4, 1290, 1294)
    assert response.created == 0 and not response.usage.HasField("megapixels")


@pytest.mark.parametrize(("size", "ratio"), [("auto", "1:1"), ("1024x1024", "1:1"), ("2100x900", "21:9"),
                                             ("800x1000", "4:5"), ("1x4096", "9:16")])
async def test_flash_image_aspect_ratio_is_the_nearest_of_ten(harness: Harness, size: str, ratio: str) -> None:
    await harness.generate(FLASH_IMAGE, size=size)
    assert harness.google.last.json()["generationConfig"]["imageConfig"] == {"aspectRatio": ratio}


@pytest.mark.parametrize(("model", "size", "parameters"), [
    (IMAGEN, "1024x1024", {"sampleCount": 2, "aspectRatio": "1:1", "sampleImageSize": "1K"}),
    (IMAGEN, "2048x1152", {"sampleCount": 2, "aspectRatio": "16:9", "sampleImageSize": "2K"}),
    (IMAGEN_ULTRA, "1536x2048", {"sampleCount": 2, "aspectRatio": "3:4", "sampleImageSize": "2K"}),
    (IMAGEN_FAST, "2048x2048", {"sampleCount": 2, "aspectRatio": "1:1"}),
])
async def test_imagen_bodies(harness: Harness, model: str, size: str, parameters: dict) -> None:
    response = await harness.generate(model, size=size, n=2, **ALL_OPTIONAL)

    request = harness.google.last
    assert request.path == f"/v1beta1/publishers/google/models/{model}:predict"
    assert request.headers["x-goog-api-key"] == VERTEX_API_KEY
    assert request.json() == {"instances": [{"prompt": "a hedgehog under a mushroom"}],
                              "parameters": {**parameters, "includeRaiReason": True}}
    assert [image.flagged for image in response.images] == [False, False]
    side = 2048 if parameters.get("sampleImageSize") == "2K" else 1024
    width, height = (int(part) for part in parameters["aspectRatio"].split(":"))
    scale = side / max(width, height)
    expected = round(width * scale) * round(height * scale) * 2 / 1e6
    assert response.usage.megapixels == pytest.approx(expected)
    assert all(not image.HasField("revised_prompt") for image in response.images)


async def test_imagen_through_project_and_location_with_application_default_credentials(
        harness_factory, monkeypatch: pytest.MonkeyPatch, fake_google, tmp_path) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(fake_google.service_account_file(tmp_path)))
    harness = await harness_factory(vertex_api_key=None, vertex_project="edu-images",
                                    vertex_location="us-central1")

    response = await harness.generate(IMAGEN)

    assert len(response.images) == 1
    predict = harness.google.last
    assert predict.path == (f"/v1beta1/projects/edu-images/locations/us-central1/publishers/google/models/"
                            f"{IMAGEN}:predict")
    assert predict.headers["authorization"] == f"Bearer {ACCESS_TOKEN}"
    assert "x-goog-api-key" not in predict.headers
    assert "/token" in [request.path for request in harness.google.requests]


async def test_missing_application_default_credentials(harness_factory, monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    harness = await harness_factory(vertex_api_key=None, vertex_project="edu-images",
                                    vertex_location="us-central1")

    failure = await harness.fail(IMAGEN)

    assert failure.reason == Reason.UPSTREAM_UNAVAILABLE
    assert failure.message == "gemini: no application default credentials found for Vertex AI"


@pytest.mark.parametrize(("model", "overrides", "message"), [
    (FLASH_IMAGE, {"gemini_api_key": None}, "gemini: no credentials configured"),
    (IMAGEN, {"vertex_api_key": None}, "gemini: no credentials configured for Vertex AI (Imagen)"),
])
async def test_missing_credentials_fail_the_call(harness_factory, model: str, overrides: dict,
                                                 message: str) -> None:
    harness = await harness_factory(**overrides)

    failure = await harness.fail(model)

    assert failure.reason == Reason.UPSTREAM_UNAVAILABLE
    assert failure.message == message
    assert harness.google.requests == []


async def test_prompt_block_is_flagged(harness: Harness) -> None:
    harness.google.then(harness.google.prompt_blocked("PROHIBITED_CONTENT"))

    response = await harness.generate(FLASH_IMAGE, watermark=images_pb2.WATERMARK_SYNTHID)

    [image] = response.images
    assert image.flagged and image.flag_reason == "blockReason: PROHIBITED_CONTENT" and image.image_data == b""
    assert image.watermark == images_pb2.WATERMARK_SYNTHID
    assert response.usage.input_tokens == 4


@pytest.mark.parametrize("finish_reason", ["IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "SAFETY", "NO_IMAGE"])
async def test_withheld_image_is_flagged(harness: Harness, finish_reason: str) -> None:
    harness.google.then(harness.google.image_withheld(finish_reason))

    response = await harness.generate(FLASH_IMAGE)

    [image] = response.images
    assert image.flagged and image.flag_reason == f"finishReason: {finish_reason}"


async def test_imagen_rai_filtered_images_are_flagged_and_the_rest_kept(harness: Harness) -> None:
    harness.google.then(harness.google.rai_filtered)

    response = await harness.generate(IMAGEN, n=3)

    assert [image.flagged for image in response.images] == [False, True, True]
    assert response.images[1].flag_reason.startswith("raiFilteredReason: Your current safety filter")
    assert response.usage.megapixels == pytest.approx(1024 * 1024 / 1e6)


async def test_imagen_with_everything_filtered_flags_every_requested_image(harness: Harness) -> None:
    harness.google.then(harness.google.all_filtered())

    response = await harness.generate(IMAGEN, n=2)

    assert [image.flagged for image in response.images] == [True, True]
    assert response.usage.megapixels == 0


@pytest.mark.parametrize(("name", "reason", "message"), [
    ("api_key_invalid", Reason.UPSTREAM_UNAVAILABLE, "gemini: upstream rejected our credentials (INVALID_ARGUMENT)"),
    ("permission_denied", Reason.UPSTREAM_UNAVAILABLE, "gemini: upstream denied access (PERMISSION_DENIED)"),
])
@pytest.mark.parametrize("model", [FLASH_IMAGE, IMAGEN])
async def test_errors_that_are_not_retried(harness: Harness, model: str, name: str, reason: Reason,
                                           message: str) -> None:
    harness.google.always(harness.google.error(name))

    failure = await harness.fail(model)

    assert failure.reason == reason and failure.message == message
    assert len(harness.google.requests) == 1
    assert GEMINI_API_KEY not in failure.message and VERTEX_API_KEY not in failure.message


@pytest.mark.parametrize(("name", "upstream_text"), [
    ("not_found", "models/gemini-9 is not found for API version v1."),
    ("invalid_argument", "Invalid value at 'generation_config.image_config.aspect_ratio'."),
])
@pytest.mark.parametrize("model", [FLASH_IMAGE, IMAGEN])
async def test_a_rejection_names_the_upstream_and_logs_its_text(harness: Harness, caplog, model: str, name: str,
                                                                upstream_text: str) -> None:
    harness.google.always(harness.google.error(name))

    with caplog.at_level(logging.WARNING, logger="quantized.provider.upstream"):
        failure = await harness.fail(model)

    assert failure.reason == Reason.UPSTREAM_REJECTED
    assert re.fullmatch(r"the gemini upstream rejected the request \(request id \S+\)", failure.message)
    logged = [record for record in caplog.records if record.getMessage() == "upstream rejected the request"]
    [logged_text] = [record.fields["upstream_message"] for record in logged]
    assert logged_text.startswith(upstream_text)
    for secret in (GEMINI_API_KEY, VERTEX_API_KEY):
        assert secret not in failure.message and secret not in logged_text


@pytest.mark.parametrize(("name", "message"), [
    ("resource_exhausted", "gemini: rate limited by upstream (RESOURCE_EXHAUSTED)"),
    ("internal", "gemini: upstream error (INTERNAL)"),
    ("unavailable", "gemini: upstream error (UNAVAILABLE)"),
])
@pytest.mark.parametrize("model", [FLASH_IMAGE, IMAGEN])
async def test_rate_limits_and_5xx_are_retried_by_the_service_only(harness: Harness, model: str, name: str,
                                                                   message: str) -> None:
    harness.google.always(harness.google.error(name))

    failure = await harness.fail(model)

    assert failure.reason == Reason.UPSTREAM_UNAVAILABLE and failure.message == message
    assert len(harness.google.requests) == 3


async def test_rate_limit_then_success(harness: Harness) -> None:
    harness.google.then(harness.google.error("resource_exhausted"))

    response = await harness.generate(FLASH_IMAGE)

    assert len(response.images) == 1 and len(harness.google.requests) == 2


async def test_a_slow_upstream_times_out(harness_factory) -> None:
    harness = await harness_factory(upstream_timeout_seconds=0.3)
    harness.google.delay_seconds = 2

    failure = await harness.fail(IMAGEN)

    assert failure.message == "gemini: upstream timed out"


async def test_flash_image_asks_for_n_candidates(harness: Harness) -> None:
    # The catalog publishes max_n 1 for this model; a route without one shows the wire mapping.
    request = generate_request(FLASH_IMAGE, n=2)
    request.constraints.ClearField("max_n")
    response = await generate_once(harness.stub, request, timeout=30)

    assert harness.google.last.json()["generationConfig"]["candidateCount"] == 2
    assert len(response.images) == 2
