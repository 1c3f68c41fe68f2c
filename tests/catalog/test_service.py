"""The catalog service on the wire: a real grpc.aio server, typed errors read back
from google.rpc.Status, admin operations taking effect at once."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from quantized.catalog.v1 import catalog_pb2
from quantized.common.v1 import images_pb2
from quantized_runtime.client import call
from quantized_runtime.errors import Reason, ServiceError
from quantized_runtime.grpc_errors import from_rpc_error
from quantized_runtime.pricing import price_generation, price_usage
from quantized_runtime.settings import SettingsError, load_settings

from catalog_svc.catalog_file import CatalogFileError
from catalog_svc.main import start
from catalog_svc.settings import CatalogSettings

from .support import ADMIN_METADATA, make_settings, serving_catalog

TIMEOUT = 10


async def wire_error(method, request, metadata=ADMIN_METADATA) -> tuple[grpc.StatusCode, ServiceError]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await method(request, timeout=TIMEOUT, metadata=metadata)
    return caught.value.code(), from_rpc_error(caught.value)


def resolve(model: str, provider: str = "", feature: str = "") -> catalog_pb2.ResolveRouteRequest:
    return catalog_pb2.ResolveRouteRequest(model=model, provider_override=provider, feature=feature)


async def set_active(client, provider: str, model: str, active: bool, actor: str = "alice"):
    return await call(client.admin.SetProviderModelActive, catalog_pb2.SetProviderModelActiveRequest(
        provider=provider, model_id=model, is_active=active, actor=actor), timeout=TIMEOUT,
        metadata=ADMIN_METADATA)


async def test_resolves_the_default_route_with_its_watermark(catalog_server):
    reply = await call(catalog_server.catalog.ResolveRoute, resolve("gpt-image-1", feature="image_generation"),
                       timeout=TIMEOUT)
    assert reply.model_id == "gpt-image-1" and reply.pinned is False
    assert [(r.provider, r.upstream_model_id, r.watermark) for r in reply.routes] == [
        ("openai", "gpt-image-1", images_pb2.WATERMARK_C2PA)]


@pytest.mark.parametrize(("model", "header", "reason", "code", "message"), [
    ("dall-e-5", "", Reason.MODEL_NOT_FOUND, grpc.StatusCode.NOT_FOUND,
     "Model 'dall-e-5' not found in the catalog"),
    # The model is checked before the header.
    ("dall-e-5", "azure", Reason.MODEL_NOT_FOUND, grpc.StatusCode.NOT_FOUND,
     "Model 'dall-e-5' not found in the catalog"),
    ("gpt-4o-mini", "", Reason.MODALITY_MISMATCH, grpc.StatusCode.FAILED_PRECONDITION,
     "Model 'gpt-4o-mini' does not support image_generation (its output modality is text)"),
    ("text-embedding-3-small", "azure", Reason.MODALITY_MISMATCH, grpc.StatusCode.FAILED_PRECONDITION,
     "Model 'text-embedding-3-small' does not support image_generation (its output modality is embedding)"),
    ("gpt-image-1", "bedrock", Reason.PROVIDER_NOT_OFFERED, grpc.StatusCode.FAILED_PRECONDITION,
     "Provider 'bedrock' does not offer model 'gpt-image-1' (offered by: openai)"),
    ("gpt-image-1", "azure", Reason.PROVIDER_NOT_OFFERED, grpc.StatusCode.FAILED_PRECONDITION,
     "Unknown provider 'azure' in X-Quantized-Provider; valid providers: bedrock, gemini, openai, sandbox"),
    ("bedrock/gpt-image-1", "", Reason.PROVIDER_NOT_OFFERED, grpc.StatusCode.FAILED_PRECONDITION,
     "Provider 'bedrock' does not offer model 'gpt-image-1' (offered by: openai)"),
    ("openai/gpt-image-1", "bedrock", Reason.PROVIDER_NOT_OFFERED, grpc.StatusCode.FAILED_PRECONDITION,
     "Conflicting providers: X-Quantized-Provider names 'bedrock' but the model prefix names 'openai'"),
    ("dall-e-3", "", Reason.NO_ACTIVE_PROVIDERS, grpc.StatusCode.FAILED_PRECONDITION,
     "No active providers for model 'dall-e-3'"),
    ("dall-e-2", "openai", Reason.NO_ACTIVE_PROVIDERS, grpc.StatusCode.FAILED_PRECONDITION,
     "No active providers for model 'dall-e-2' on provider 'openai'"),
    ("amazon.nova-canvas-v1:0", "", Reason.NO_ACTIVE_PROVIDERS, grpc.StatusCode.FAILED_PRECONDITION,
     "No active providers for model 'amazon.nova-canvas-v1:0'"),
    ("imagen-4.0-generate-001", "gemini", Reason.NO_ACTIVE_PROVIDERS, grpc.StatusCode.FAILED_PRECONDITION,
     "No active providers for model 'imagen-4.0-generate-001' on provider 'gemini'"),
])
async def test_every_resolution_error_travels_with_its_reason(catalog_server, model, header, reason, code,
                                                             message):
    status, error = await wire_error(catalog_server.catalog.ResolveRoute, resolve(model, header))
    assert (status, error.reason, error.message) == (code, reason, message)


async def test_a_provider_prefix_pins_the_provider_and_the_bare_id_comes_back(catalog_server):
    reply = await call(catalog_server.catalog.ResolveRoute, resolve("openai/gpt-image-1"), timeout=TIMEOUT)
    assert (reply.model_id, reply.pinned) == ("gpt-image-1", True)
    assert [r.provider for r in reply.routes] == ["openai"]
    same = await call(catalog_server.catalog.ResolveRoute, resolve("openai/gpt-image-1", "OpenAI"),
                      timeout=TIMEOUT)
    assert same.pinned is True
    header_only = await call(catalog_server.catalog.ResolveRoute, resolve("gpt-image-1", "openai"),
                             timeout=TIMEOUT)
    assert header_only.pinned is True


async def test_an_unknown_prefix_is_part_of_the_model_id(catalog_server):
    _, error = await wire_error(catalog_server.catalog.ResolveRoute, resolve("acme/gpt-image-1"))
    assert error.reason == Reason.MODEL_NOT_FOUND
    assert error.message == "Model 'acme/gpt-image-1' not found in the catalog"


async def test_activation_routes_per_model_at_once_and_deactivation_too(catalog_server):
    reply = await set_active(catalog_server, "bedrock", "amazon.nova-canvas-v1:0", True)
    row = reply.provider_model
    assert (row.is_active, row.file_active, row.operator_active, row.region) == (True, False, True, "us-east-1")
    routed = await call(catalog_server.catalog.ResolveRoute, resolve("amazon.nova-canvas-v1:0"), timeout=TIMEOUT)
    assert ([r.provider for r in routed.routes], routed.pinned) == (["bedrock"], False)
    assert routed.routes[0].watermark == images_pb2.WATERMARK_PROVENANCE
    pinned = await call(catalog_server.catalog.ResolveRoute, resolve("bedrock/amazon.nova-canvas-v1:0"),
                        timeout=TIMEOUT)
    assert (pinned.model_id, pinned.pinned) == ("amazon.nova-canvas-v1:0", True)
    await set_active(catalog_server, "bedrock", "amazon.nova-canvas-v1:0", False)
    _, error = await wire_error(catalog_server.catalog.ResolveRoute, resolve("amazon.nova-canvas-v1:0"))
    assert error.reason == Reason.NO_ACTIVE_PROVIDERS


ADMIN_CALLS = [
    ("SetProviderModelActive", catalog_pb2.SetProviderModelActiveRequest(
        provider="bedrock", model_id="amazon.nova-canvas-v1:0", is_active=True)),
    ("ListCatalog", catalog_pb2.ListCatalogRequest()),
    ("ReloadCatalog", catalog_pb2.ReloadCatalogRequest()),
    ("ListAuditEvents", catalog_pb2.ListAuditEventsRequest()),
]


@pytest.mark.parametrize(("method", "request_message"), ADMIN_CALLS, ids=[name for name, _ in ADMIN_CALLS])
@pytest.mark.parametrize("metadata", [(), (("authorization", "Bearer wrong"),)], ids=["missing", "wrong"])
async def test_admin_calls_need_the_admin_token(catalog_server, method, request_message, metadata):
    status, error = await wire_error(getattr(catalog_server.admin, method), request_message, metadata)
    assert (status, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, Reason.PERMISSION_DENIED)
    _, still = await wire_error(catalog_server.catalog.ResolveRoute, resolve("amazon.nova-canvas-v1:0"))
    assert still.reason == Reason.NO_ACTIVE_PROVIDERS


@pytest.mark.parametrize(("provider", "model", "message"), [
    ("azure", "gpt-image-1", "Unknown provider 'azure' (known providers: bedrock, gemini, openai, sandbox)"),
    ("bedrock", "amazon.nova-canvas-v2:0", "Unknown model 'amazon.nova-canvas-v2:0'"),
])
async def test_admin_refuses_unknown_rows_clearly(catalog_server, provider, model, message):
    status, error = await wire_error(catalog_server.admin.SetProviderModelActive,
                                     catalog_pb2.SetProviderModelActiveRequest(
                                         provider=provider, model_id=model, is_active=True))
    assert (status, error.reason, error.message) == (grpc.StatusCode.NOT_FOUND, Reason.NOT_FOUND, message)
    events = await call(catalog_server.admin.ListAuditEvents, catalog_pb2.ListAuditEventsRequest(),
                        timeout=TIMEOUT, metadata=ADMIN_METADATA)
    assert [e.action for e in events.events] == ["catalog.seed"]


async def test_changes_are_audited_newest_first(catalog_server):
    await set_active(catalog_server, "gemini", "imagen-4.0-generate-001", True, actor="alice")
    await set_active(catalog_server, "gemini", "imagen-4.0-generate-001", False, actor="bob")
    reply = await call(catalog_server.admin.ListAuditEvents, catalog_pb2.ListAuditEventsRequest(limit=2),
                       timeout=TIMEOUT, metadata=ADMIN_METADATA)
    # In plaintext the admin token is the credential; the names the caller wrote are not.
    assert [(e.actor, e.action) for e in reply.events] == [
        ("admin-token", "provider_model.disable"), ("admin-token", "provider_model.enable")]
    assert reply.events[0].detail == "gemini/imagen-4.0-generate-001: is_active true -> false"
    assert reply.events[1].detail == "gemini/imagen-4.0-generate-001: is_active false (catalog file) -> true"
    assert reply.events[0].time.seconds >= reply.events[1].time.seconds > 0


async def test_reload_with_a_changed_price_takes_effect_without_restart(catalog_server, catalog_file):
    quote = catalog_pb2.QuotePriceRequest(model_id="dall-e-3", size="1024x1024",
                                          quality=images_pb2.QUALITY_STANDARD, n=1)
    before = await call(catalog_server.catalog.QuotePrice, quote, timeout=TIMEOUT)
    assert before.max_micro_credits == 640_000
    catalog_file.write_text(catalog_file.read_text()
                            .replace('version: "2026-12-20.1"', 'version: "2026-11-26.1"')
                            .replace('standard: {"1024x1024": 0.040,', 'standard: {"1024x1024": 0.050,'))
    reply = await call(catalog_server.admin.ReloadCatalog, catalog_pb2.ReloadCatalogRequest(actor="carol"),
                       timeout=TIMEOUT, metadata=ADMIN_METADATA)
    assert (reply.catalog_version, reply.models, reply.provider_models) == ("2026-11-26.1", 15, 15)
    after = await call(catalog_server.catalog.QuotePrice, quote, timeout=TIMEOUT)
    assert after.max_micro_credits == 800_000


async def test_reload_of_a_malformed_file_names_line_and_field_and_keeps_the_catalog(catalog_server,
                                                                                     catalog_file):
    text = catalog_file.read_text().replace("max_n: 5", "max_n: five", 1)
    catalog_file.write_text(text)
    line = text[:text.index("max_n: five")].count("\n") + 1
    status, error = await wire_error(catalog_server.admin.ReloadCatalog, catalog_pb2.ReloadCatalogRequest())
    assert (status, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, Reason.INVALID_REQUEST)
    assert (f"line {line}: models[3].constraints.max_n (model 'amazon.titan-image-generator-v2:0'): "
            "Input should be a valid integer") in error.message
    listing = await call(catalog_server.admin.ListCatalog, catalog_pb2.ListCatalogRequest(),
                         timeout=TIMEOUT, metadata=ADMIN_METADATA)
    assert listing.catalog_version == "2026-12-20.1" and len(listing.models) == 15


async def test_list_models_exposes_discovery_fields(catalog_server):
    reply = await call(catalog_server.catalog.ListModels, catalog_pb2.ListModelsRequest(), timeout=TIMEOUT)
    models = {m.id: m for m in reply.models}
    assert len(models) == 15
    image = models["gpt-image-1"]
    assert (image.owned_by, image.active, image.created) == ("openai", True, 1745517030)
    assert list(image.supported_features) == ["image_generation"]
    assert (list(image.input_modalities), list(image.output_modalities)) == (["text"], ["image"])
    assert image.watermark == images_pb2.WATERMARK_C2PA
    assert image.constraints.max_n == 1 and "high" in image.constraints.quality_values
    cost = json_format.MessageToDict(image.cost)
    assert cost["type"] == "per_token" and cost["usd_per_million_output_tokens"] == 40.0
    dalle = models["dall-e-3"]
    assert (dalle.active, list(dalle.providers)) == (False, ["openai"])
    assert json_format.MessageToDict(dalle.cost)["usd_per_image"]["standard"]["1024x1024"] == 0.04
    nova = models["amazon.nova-canvas-v1:0"]
    assert (nova.owned_by, nova.active, nova.watermark) == ("bedrock", False, images_pb2.WATERMARK_PROVENANCE)
    assert list(models["gpt-4o-mini"].output_modalities) == ["text"]
    assert "image_generation" not in models["text-embedding-3-small"].supported_features
    assert models["sandbox-image-1"].active is True
    assert [m.id for m in reply.models if m.active] == [
        "gpt-image-1", "gpt-4o-mini", "text-embedding-3-small", "sandbox-image-1"]


async def test_list_models_names_the_options_each_model_accepts(catalog_server):
    """What provider_svc forwards for the default route's family, so a client offers only those."""
    reply = await call(catalog_server.catalog.ListModels, catalog_pb2.ListModelsRequest(), timeout=TIMEOUT)
    models = {m.id: m for m in reply.models}
    options = {model_id: (list(models[model_id].options), list(models[model_id].output_formats))
               for model_id in ("gpt-image-1", "dall-e-3", "stability.sd3-5-large-v1:0", "imagen-4.0-generate-001",
                                "sandbox-image-1", "gpt-4o-mini")}
    assert options == {
        "gpt-image-1": (["background", "moderation", "output_compression", "output_format", "quality", "user"],
                        ["jpeg", "png", "webp"]),
        "dall-e-3": (["quality", "style", "user"], []),
        "stability.sd3-5-large-v1:0": (["negative_prompt", "output_format", "seed"], ["jpeg", "png"]),
        "imagen-4.0-generate-001": ([], []),
        "sandbox-image-1": (["output_format", "seed"], ["jpeg", "png", "webp"]),
        # A chat model's route names no image family.
        "gpt-4o-mini": ([], []),
    }


async def test_list_catalog_lists_rows_and_version(catalog_server):
    reply = await call(catalog_server.admin.ListCatalog, catalog_pb2.ListCatalogRequest(),
                       timeout=TIMEOUT, metadata=ADMIN_METADATA)
    rows = {(r.provider, r.model_id): r for r in reply.provider_models}
    assert reply.catalog_version == "2026-12-20.1" and len(rows) == 15
    stability = rows[("bedrock", "stability.stable-image-ultra-v1:0")]
    assert (stability.region, stability.is_active, stability.file_active) == ("us-west-2", False, False)
    assert not stability.HasField("operator_active")
    assert rows[("openai", "gpt-image-1")].is_active is True


async def test_quote_and_usage_prices_on_the_wire(catalog_server):
    stub = catalog_server.catalog
    spec = await call(stub.QuotePrice, catalog_pb2.QuotePriceRequest(
        model_id="dall-e-3", size="1024x1024", quality=images_pb2.QUALITY_STANDARD, n=1), timeout=TIMEOUT)
    assert (spec.max_micro_credits, spec.per_image_micro_credits, spec.usage_priced) == (640_000, 640_000, False)
    tokens = await call(stub.QuotePrice, catalog_pb2.QuotePriceRequest(
        model_id="gpt-image-1", size="1024x1024", quality=images_pb2.QUALITY_HIGH), timeout=TIMEOUT)
    assert (tokens.max_micro_credits, tokens.usage_priced) == (2_822_400, True)
    # The charge for what was generated is priced from the quote (as the edge does).
    used = price_generation(tokens, 1, images_pb2.UpstreamUsage(
        input_tokens=238, output_tokens=4160, total_tokens=4398))
    assert used == 2_681_440
    titan = await call(stub.QuotePrice, catalog_pb2.QuotePriceRequest(
        model_id="amazon.titan-image-generator-v2:0"), timeout=TIMEOUT)
    assert price_generation(titan, 0, images_pb2.UpstreamUsage()) == 0
    sandbox = await call(stub.QuotePrice, catalog_pb2.QuotePriceRequest(
        model_id="sandbox-image-1", size="512x256", n=3), timeout=TIMEOUT)
    assert price_generation(sandbox, 3, images_pb2.UpstreamUsage()) == 3 * 160_000


@pytest.mark.parametrize("model", ["gpt-image-1", "gemini-2.5-flash-image"])
async def test_the_quoted_usage_price_card_prices_the_worst_case_as_quoted(catalog_server, model):
    stub = catalog_server.catalog
    for size in ("1024x1024", "1536x1024", "1024x1536", "auto", "", "2048x2048", "16:9"):
        for quality in (images_pb2.QUALITY_UNSPECIFIED, images_pb2.QUALITY_LOW, images_pb2.QUALITY_MEDIUM,
                        images_pb2.QUALITY_HIGH, images_pb2.QUALITY_AUTO, images_pb2.QUALITY_HD):
            quote = await call(stub.QuotePrice, catalog_pb2.QuotePriceRequest(
                model_id=model, size=size, quality=quality, n=2), timeout=TIMEOUT)
            assert quote.usage_priced and quote.HasField("usage_price")
            # The card's worst case for n images is the quote itself.
            assert price_usage(quote.usage_price, 2, images_pb2.UpstreamUsage()) == quote.max_micro_credits


async def test_a_per_image_quote_has_no_usage_price_card(catalog_server):
    quote = await call(catalog_server.catalog.QuotePrice, catalog_pb2.QuotePriceRequest(
        model_id="dall-e-3", size="1024x1024", quality=images_pb2.QUALITY_STANDARD), timeout=TIMEOUT)
    assert quote.usage_priced is False and not quote.HasField("usage_price")


@pytest.mark.parametrize(("model", "reason"), [
    ("dall-e-5", Reason.MODEL_NOT_FOUND), ("gpt-4o-mini", Reason.MODALITY_MISMATCH)])
async def test_prices_of_unknown_or_non_image_models_are_refused(catalog_server, model, reason):
    _, error = await wire_error(catalog_server.catalog.QuotePrice, catalog_pb2.QuotePriceRequest(model_id=model))
    assert error.reason == reason


async def test_the_server_reports_serving_on_health(catalog_server):
    health = health_pb2_grpc.HealthStub(catalog_server.channel)
    for service in ("quantized.catalog.v1.CatalogService", "quantized.catalog.v1.CatalogAdminService"):
        reply = await call(health.Check, health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_a_missing_admin_token_stops_start_with_a_clear_message(monkeypatch):
    monkeypatch.delenv("QUANTIZED_ADMIN_TOKEN", raising=False)
    with pytest.raises(SettingsError, match="QUANTIZED_ADMIN_TOKEN: Field required"):
        load_settings(CatalogSettings)


def test_settings_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("QUANTIZED_ADMIN_TOKEN", "secret-token-0123456789abcdef-0123")
    monkeypatch.setenv("QUANTIZED_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("QUANTIZED_CATALOG_ENABLE_SANDBOX", "true")
    monkeypatch.setenv("QUANTIZED_CATALOG_REFRESH_SECONDS", "0.5")
    monkeypatch.setenv("QUANTIZED_CATALOG_CREDITS_PER_USD", "1000000")
    settings = load_settings(CatalogSettings)
    assert settings.enable_sandbox is True and settings.refresh_seconds == 0.5
    assert settings.credits_per_usd == 1_000_000
    assert "secret-token" not in repr(settings)
    assert settings.resolved_database_url().endswith("/data/catalog.db")
    assert (tmp_path / "data").is_dir()


async def test_a_malformed_catalog_file_stops_start_naming_line_and_field(catalog_file, tmp_path):
    catalog_file.write_text(catalog_file.read_text().replace("watermark: synthid", "watermark: sinthid", 1))
    settings = make_settings("", catalog_file, tmp_path / "data")
    with pytest.raises(CatalogFileError, match=r"line \d+: models\[8\]\.watermark \(model 'imagen-4\.0-fast-generate-001'\): Input"):
        await start(settings)


async def test_the_default_database_is_sqlite_in_the_data_dir(catalog_file, tmp_path):
    data_dir = tmp_path / "nested" / "data"
    async with serving_catalog(make_settings("", catalog_file, data_dir)) as client:
        reply = await call(client.catalog.ResolveRoute, resolve("sandbox-image-1"), timeout=TIMEOUT)
        assert reply.routes[0].watermark == images_pb2.WATERMARK_NONE
    assert (data_dir / "catalog.db").is_file()


@pytest.mark.postgres
async def test_the_service_on_postgresql(postgres_url, catalog_file, tmp_path):
    async with serving_catalog(make_settings(postgres_url, catalog_file, tmp_path)) as client:
        _, error = await wire_error(client.catalog.ResolveRoute, resolve("stability.sd3-5-large-v1:0"))
        assert error.reason == Reason.NO_ACTIVE_PROVIDERS
        await set_active(client, "bedrock", "stability.sd3-5-large-v1:0", True)
        reply = await call(client.catalog.ResolveRoute, resolve("stability.sd3-5-large-v1:0"), timeout=TIMEOUT)
        assert [(r.provider, r.region) for r in reply.routes] == [("bedrock", "us-west-2")]
