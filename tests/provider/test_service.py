"""provider_svc as a gRPC service: contract, errors on the wire, health, settings."""

from __future__ import annotations

import logging

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from provider_svc.servicer import SERVICE_NAMES
from provider_svc.settings import ProviderSettings
from quantized.common.v1 import errors_pb2, images_pb2
from quantized_runtime.client import call
from quantized_runtime.defaults import PROVIDER_ADDR
from quantized_runtime.errors import Reason
from tests.fake_upstreams.bedrock import NOVA
from tests.fake_upstreams.google import GEMINI_API_KEY, VERTEX_API_KEY
from tests.fake_upstreams.openai import API_KEY
from tests.provider.conftest import Harness, generate_once, generate_request


@pytest.mark.parametrize(("model", "watermark"), [
    ("gpt-image-1", images_pb2.WATERMARK_C2PA), ("dall-e-3", images_pb2.WATERMARK_NONE),
    (NOVA, images_pb2.WATERMARK_PROVENANCE), ("stability.stable-image-core-v1:0", images_pb2.WATERMARK_NONE),
    ("imagen-4.0-generate-001", images_pb2.WATERMARK_SYNTHID), ("gemini-2.5-flash-image", images_pb2.WATERMARK_SYNTHID),
    ("sandbox-image-1", images_pb2.WATERMARK_NONE),
])
async def test_the_catalog_watermark_is_stamped_on_every_image(harness: Harness, model: str, watermark: int) -> None:
    response = await harness.generate(model, watermark=watermark)
    assert response.images and all(image.watermark == watermark for image in response.images)


async def test_errors_carry_the_reason_and_provider_on_the_wire(harness: Harness) -> None:
    harness.openai.always(harness.openai.error("rate_limit"))

    error = await generate_once(harness.stub, generate_request("gpt-image-1"), timeout=30)

    assert isinstance(error, errors_pb2.CallError)
    assert error.reason == errors_pb2.ERROR_REASON_UPSTREAM_UNAVAILABLE and error.metadata["provider"] == "openai"


async def test_a_rejected_parameter_is_upstream_rejected_naming_the_upstream(harness: Harness, caplog) -> None:
    harness.bedrock.then(harness.bedrock.error("ValidationException"))

    with caplog.at_level(logging.WARNING, logger="quantized.provider.upstream"):
        failure = await harness.fail(NOVA)

    assert failure.reason == Reason.UPSTREAM_REJECTED
    assert failure.message.startswith("the bedrock upstream rejected the request (request id ")
    assert "extraneous key" not in failure.message
    assert any("extraneous key [foo] is not permitted" in getattr(record, "fields", {}).get("upstream_message", "")
               for record in caplog.records)


async def test_unknown_provider(harness: Harness) -> None:
    failure = await harness.fail("gpt-image-1", provider="midjourney")
    assert failure.reason == Reason.PROVIDER_NOT_OFFERED
    assert failure.field == "provider"


@pytest.mark.parametrize(("provider", "model"), [("openai", NOVA), ("bedrock", "gpt-image-1"),
                                                 ("gemini", "dall-e-3"), ("bedrock", "unknown-model")])
async def test_a_model_the_adapter_has_no_body_for(harness: Harness, provider: str, model: str) -> None:
    failure = await harness.fail(model, provider=provider)
    assert failure.reason == Reason.PROVIDER_NOT_OFFERED
    assert harness.openai.requests == [] and harness.bedrock.requests == []


async def test_a_missing_prompt_is_invalid(harness: Harness) -> None:
    failure = await harness.fail("gpt-image-1", prompt="")
    assert failure.reason == Reason.INVALID_REQUEST and failure.field == "params.prompt"


async def test_health_reports_serving(harness: Harness) -> None:
    health = health_pb2_grpc.HealthStub(harness.channel)
    reply = await call(health.Check, health_pb2.HealthCheckRequest(service=SERVICE_NAMES[0]), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_credentials_never_reach_logs_or_messages(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    harness.openai.then(harness.openai.error("invalid_api_key"))
    harness.google.then(harness.google.error("api_key_invalid"), harness.google.error("invalid_argument"))
    failures = [await harness.fail("gpt-image-1"), await harness.fail("gemini-2.5-flash-image"),
                await harness.fail("imagen-4.0-generate-001")]
    await harness.generate("gpt-image-1")

    text = caplog.text + " ".join(failure.message for failure in failures)
    for secret in (API_KEY, GEMINI_API_KEY, VERTEX_API_KEY, "fake-secret-access-key"):
        assert secret not in text and secret[:10] not in text


def test_settings_need_no_credentials_and_read_the_standard_names(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "GEMINI_API_KEY", "GOOGLE_GEMINI_BASE_URL",
                 "QUANTIZED_VERTEX_API_KEY", "QUANTIZED_PROVIDER_LISTEN"):
        monkeypatch.delenv(name, raising=False)
    defaults = ProviderSettings()
    assert defaults.listen == PROVIDER_ADDR and defaults.openai_api_key is None
    assert defaults.max_message_bytes >= 128 * 1024 * 1024

    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://openai.local/v1")
    monkeypatch.setenv("GEMINI_API_KEY", "g-env")
    monkeypatch.setenv("QUANTIZED_VERTEX_PROJECT", "p")
    monkeypatch.setenv("QUANTIZED_VERTEX_LOCATION", "us-central1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "http://bedrock.local")
    monkeypatch.setenv("QUANTIZED_PROVIDER_UPSTREAM_RETRIES", "4")
    loaded = ProviderSettings()
    assert loaded.openai_api_key.get_secret_value() == "sk-env"
    assert loaded.openai_base_url == "http://openai.local/v1"
    assert loaded.gemini_api_key.get_secret_value() == "g-env"
    assert (loaded.vertex_project, loaded.vertex_location) == ("p", "us-central1")
    assert loaded.bedrock_endpoint_url == "http://bedrock.local"
    assert loaded.upstream_retries == 4
    assert "sk-env" not in repr(loaded)
