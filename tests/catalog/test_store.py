"""The catalog store and core on real SQLite and PostgreSQL: seeding, resolution,
operator changes, reloads, audit and multi-replica convergence."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from quantized_runtime.errors import Reason, ServiceError

from catalog_svc import tables
from catalog_svc.catalog_file import CatalogFileError
from catalog_svc.service import CatalogCore
from catalog_svc.migrate import upgrade_to_head
from catalog_svc.pricing import Pricer
from catalog_svc.storage import CatalogRepository


@pytest.fixture
async def engine(database_url) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(database_url)
    await upgrade_to_head(engine)
    yield engine
    await engine.dispose()


def make_core(engine, catalog_file, *, sandbox_enabled=True, refresh_seconds=2.0) -> CatalogCore:
    return CatalogCore(CatalogRepository(engine), catalog_file, Pricer(),
                       sandbox_enabled=sandbox_enabled, refresh_seconds=refresh_seconds)


@pytest.fixture
async def core(engine, catalog_file) -> AsyncIterator[CatalogCore]:
    core = make_core(engine, catalog_file)
    await core.initialise()
    yield core
    await core.stop()


async def _audit_count(engine) -> int:
    async with engine.connect() as conn:
        return await conn.scalar(sa.select(sa.func.count()).select_from(tables.audit_events))


async def test_migrations_are_idempotent(engine):
    await upgrade_to_head(engine)
    async with engine.connect() as conn:
        names = await conn.run_sync(lambda sync: set(sa.inspect(sync).get_table_names()))
    assert {"providers", "models", "provider_models", "audit_events", "catalog_state"} <= names


async def test_seeding_stores_the_file_and_audits_once(core, engine, catalog_file):
    snapshot = core.snapshot
    assert snapshot.version == "2026-12-20.1"
    assert len(snapshot.models) == 15
    assert len(snapshot.all_rows()) == 15
    events = await core.audit_events(10)
    assert [e.action for e in events] == ["catalog.seed"]
    assert events[0].actor == "system:start"
    # A restart with the same file writes nothing.
    again = make_core(engine, catalog_file)
    result = await again.initialise()
    assert result.changed is False
    assert again.snapshot.revision == snapshot.revision
    assert await _audit_count(engine) == 1


async def test_resolution_reads_the_stored_catalog(core):
    resolution = core.resolve("gpt-image-1", "", "image_generation")
    assert [(r.provider, r.upstream_model_id) for r in resolution.routes] == [("openai", "gpt-image-1")]
    assert resolution.pinned is False and resolution.model.watermark == "c2pa"
    with pytest.raises(ServiceError) as caught:
        core.resolve("dall-e-3", "", "")
    assert caught.value.reason == Reason.NO_ACTIVE_PROVIDERS
    assert caught.value.message.startswith("No active providers")


async def test_operator_activation_is_stored_audited_and_visible_at_once(core, engine):
    before = datetime.now(UTC) - timedelta(seconds=1)
    row = await core.set_active("bedrock", "amazon.nova-canvas-v1:0", True, "alice")
    assert row.is_active and row.operator_active is True
    resolution = core.resolve("amazon.nova-canvas-v1:0", "", "")
    assert [(r.provider, r.region) for r in resolution.routes] == [("bedrock", "us-east-1")]
    event = (await core.audit_events(1))[0]
    assert (event.actor, event.action) == ("alice", "provider_model.enable")
    assert "bedrock/amazon.nova-canvas-v1:0" in event.detail and "-> true" in event.detail
    assert event.time.tzinfo is not None and before <= event.time <= datetime.now(UTC)


async def test_operator_decisions_survive_reload_and_restart(core, engine, catalog_file):
    await core.set_active("bedrock", "amazon.nova-canvas-v1:0", True, "alice")
    await core.set_active("openai", "gpt-image-1", False, "bob")
    await core.reload("carol")
    restarted = make_core(engine, catalog_file)
    await restarted.initialise()
    for current in (core, restarted):
        assert current.resolve("amazon.nova-canvas-v1:0", "", "").routes[0].provider == "bedrock"
        with pytest.raises(ServiceError, match="No active providers"):
            current.resolve("gpt-image-1", "", "")


@pytest.mark.parametrize(("provider", "model", "message"), [
    ("azure", "gpt-image-1", "Unknown provider 'azure' (known providers: bedrock, gemini, openai, sandbox)"),
    ("openai", "dall-e-4", "Unknown model 'dall-e-4'"),
    ("bedrock", "gpt-image-1", "Provider 'bedrock' has no row for model 'gpt-image-1' (rows exist for: openai)"),
])
async def test_unknown_rows_are_refused_without_change(core, engine, provider, model, message):
    revision, audits = core.snapshot.revision, await _audit_count(engine)
    with pytest.raises(ServiceError) as caught:
        await core.set_active(provider, model, True, "alice")
    assert caught.value.reason == Reason.NOT_FOUND
    assert caught.value.message == message
    assert await CatalogRepository(engine).revision() == revision
    assert await _audit_count(engine) == audits


async def test_reload_applies_changed_prices_and_new_models(core, catalog_file):
    text = catalog_file.read_text()
    text = text.replace('version: "2026-12-20.1"', 'version: "2026-11-25.2"')
    text = text.replace("usd_per_image: 0.030", "usd_per_image: 0.035")
    text += """
  - id: sandbox-image-2
    created: 1764028801
    input_modalities: [text]
    output_modalities: [image]
    supported_features: [image_generation]
    watermark: none
    cost: {type: per_image, usd_per_image: 0.001}
    routes:
      - {provider: sandbox, upstream_model_id: sandbox-image-2, adapter: sandbox, active: true}
"""
    catalog_file.write_text(text)
    summary = await core.reload("alice")
    assert (summary.version, summary.models, summary.changed) == ("2026-11-25.2", 16, True)
    assert core.quote("stability.stable-image-core-v1:0", "", None, 1).max_micro_credits == 560_000
    assert core.resolve("sandbox-image-2", "", "").routes[0].provider == "sandbox"
    assert core.resolve("sandbox-image-2", "", "").routes[0].adapter == "sandbox"
    event = (await core.audit_events(1))[0]
    assert (event.actor, event.action) == ("alice", "catalog.reload")
    assert "2026-12-20.1 -> 2026-11-25.2" in event.detail
    assert "models added: sandbox-image-2" in event.detail
    assert "models changed: stability.stable-image-core-v1:0" in event.detail


async def test_reload_removes_models_dropped_from_the_file(core, catalog_file):
    text = catalog_file.read_text()
    start = text.index("  - id: gpt-4o-mini")
    end = text.index("  - id: text-embedding-3-small")
    catalog_file.write_text(text[:start] + text[end:])
    await core.reload("alice")
    with pytest.raises(ServiceError) as caught:
        core.resolve("gpt-4o-mini", "", "")
    assert caught.value.reason == Reason.MODEL_NOT_FOUND


async def test_a_malformed_reload_keeps_the_previous_catalog(core, engine, catalog_file):
    revision, audits = core.snapshot.revision, await _audit_count(engine)
    catalog_file.write_text(catalog_file.read_text().replace("usd_per_image: 0.030", "usd_per_image: -1"))
    with pytest.raises(ServiceError) as caught:
        await core.reload("alice")
    assert caught.value.reason == Reason.INVALID_REQUEST
    assert "previous catalog kept" in caught.value.message
    assert ("cost.usd_per_image (model 'stability.stable-image-core-v1:0'): "
            "Input should be greater than or equal to 0") in caught.value.message
    assert core.quote("stability.stable-image-core-v1:0", "", None, 1).max_micro_credits == 480_000
    assert core.snapshot.revision == revision and await _audit_count(engine) == audits


async def test_a_malformed_file_refuses_to_seed(engine, catalog_file):
    catalog_file.write_text("version: 1\nproviders: oops\nmodels: []\n")
    with pytest.raises(CatalogFileError, match="line 2: providers: Input should be a valid list"):
        await make_core(engine, catalog_file).initialise()


async def test_the_sandbox_is_inactive_unless_enabled(engine, catalog_file):
    core = make_core(engine, catalog_file, sandbox_enabled=False)
    await core.initialise()
    with pytest.raises(ServiceError, match="No active providers"):
        core.resolve("sandbox-image-1", "", "")
    with pytest.raises(ServiceError) as caught:
        await core.set_active("sandbox", "sandbox-image-1", True, "alice")
    assert caught.value.reason == Reason.INVALID_REQUEST
    enabled = make_core(engine, catalog_file, sandbox_enabled=True)
    await enabled.initialise()
    assert enabled.resolve("sandbox-image-1", "", "").routes[0].provider == "sandbox"


async def test_replicas_converge_by_polling_the_revision(engine, catalog_file):
    writer = make_core(engine, catalog_file)
    await writer.initialise()
    reader = make_core(engine, catalog_file, refresh_seconds=0.05)
    await reader.initialise()
    reader.start_polling()
    try:
        await writer.set_active("bedrock", "amazon.titan-image-generator-v2:0", True, "alice")
        async with asyncio.timeout(30):
            while not reader.snapshot.is_active("amazon.titan-image-generator-v2:0"):
                await asyncio.sleep(0.05)
        assert reader.resolve("amazon.titan-image-generator-v2:0", "", "").routes[0].provider == "bedrock"
    finally:
        await reader.stop()


async def test_replicas_starting_together_migrate_and_seed_once(database_url, catalog_file):
    engines = [create_async_engine(database_url) for _ in range(2)]
    try:
        await asyncio.gather(*(upgrade_to_head(engine) for engine in engines))
        cores = [make_core(engine, catalog_file) for engine in engines]
        results = await asyncio.gather(*(core.initialise() for core in cores))
        assert sorted(result.changed for result in results) == [False, True]
        assert await _audit_count(engines[0]) == 1
        assert cores[0].snapshot.revision == cores[1].snapshot.revision
    finally:
        for engine in engines:
            await engine.dispose()


async def test_resolutions_and_refreshes_are_counted(engine, catalog_file):
    def counted(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    core = make_core(engine, catalog_file)
    await core.initialise()
    before = {"resolved": counted("quantized_catalog_route_resolutions_total", outcome="OK"),
              "unknown": counted("quantized_catalog_route_resolutions_total", outcome="MODEL_NOT_FOUND"),
              "unchanged": counted("quantized_catalog_snapshot_refreshes_total", result="unchanged"),
              "rebuilt": counted("quantized_catalog_snapshot_refreshes_total", result="rebuilt")}
    core.resolve("gpt-image-1", "", "")
    with pytest.raises(ServiceError):
        core.resolve("no-such-model", "", "")
    assert await core.refresh() is False
    await core.set_active("bedrock", "amazon.titan-image-generator-v2:0", True, "alice")
    after = {"resolved": counted("quantized_catalog_route_resolutions_total", outcome="OK"),
             "unknown": counted("quantized_catalog_route_resolutions_total", outcome="MODEL_NOT_FOUND"),
             "unchanged": counted("quantized_catalog_snapshot_refreshes_total", result="unchanged"),
             "rebuilt": counted("quantized_catalog_snapshot_refreshes_total", result="rebuilt")}
    assert {name: after[name] - before[name] for name in before} == {
        "resolved": 1, "unknown": 1, "unchanged": 1, "rebuilt": 1}
    assert REGISTRY.get_sample_value("quantized_catalog_snapshot_revision") == core.snapshot.revision
