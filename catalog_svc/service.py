"""The catalog's behaviour, free of gRPC: snapshot lifecycle, resolution, prices, operations."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

from quantized.catalog.v1 import catalog_pb2
from quantized_runtime.errors import Reason, ServiceError

from catalog_svc.catalog_file import CatalogFileError, load_catalog_file
from catalog_svc.metrics import FAILED, REBUILT, RESOLVED, SNAPSHOT_REVISION, UNCHANGED, resolution_refused
from catalog_svc.pricing import Pricer
from catalog_svc.snapshot import (
    CatalogSnapshot,
    ModelInfo,
    Resolution,
    RouteRow,
    effective_activity,
)
from catalog_svc.storage import ApplyResult, AuditRecord, CatalogRepository, StoredCatalog

log = logging.getLogger("quantized.catalog")

DEFAULT_AUDIT_LIMIT = 100
MAX_AUDIT_LIMIT = 1000


@dataclass(frozen=True)
class ReloadSummary:
    version: str
    models: int
    provider_models: int
    changed: bool


class CatalogCore:
    def __init__(self, repository: CatalogRepository, catalog_path: Path, pricer: Pricer, *,
                 sandbox_enabled: bool, refresh_seconds: float) -> None:
        self._repository = repository
        self._catalog_path = catalog_path
        self._pricer = pricer
        self._sandbox_enabled = sandbox_enabled
        self._refresh_seconds = refresh_seconds
        self._snapshot = CatalogSnapshot(revision=-1, version="", providers=(), models=(), rows=())
        self._refresh_lock = asyncio.Lock()
        self._write_lock = asyncio.Lock()
        self._poller: asyncio.Task[None] | None = None

    @property
    def snapshot(self) -> CatalogSnapshot:
        return self._snapshot

    async def initialise(self, actor: str = "system:start") -> ApplyResult:
        """Seed the database from the catalog file (CatalogFileError if malformed), then load."""
        catalog = load_catalog_file(self._catalog_path)
        async with self._write_lock:
            result = await self._repository.apply_file(catalog, actor=actor, action="catalog.seed",
                                                       audit_unchanged=False)
        await self.refresh(force=True)
        log.info("catalog loaded", extra={"fields": {
            "version": result.version, "models": result.models, "changed": result.changed}})
        return result

    def start_polling(self) -> None:
        self._poller = asyncio.create_task(self._poll_forever(), name="catalog-refresh")

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None

    async def refresh(self, *, force: bool = False) -> bool:
        """Rebuild the snapshot when the stored revision moved (or when forced)."""
        async with self._refresh_lock:
            if not force and await self._repository.revision() == self._snapshot.revision:
                UNCHANGED.inc()
                return False
            stored = await self._repository.load()
            if stored.revision >= self._snapshot.revision or force:
                self._snapshot = self._build(stored)
                SNAPSHOT_REVISION.set(self._snapshot.revision)
            REBUILT.inc()
            return True

    async def _poll_forever(self) -> None:
        # Other replicas write to the same database; polling the revision makes
        # every replica converge within one interval.
        while True:
            await asyncio.sleep(self._refresh_seconds)
            try:
                if await self.refresh():
                    log.info("catalog snapshot refreshed",
                             extra={"fields": {"revision": self._snapshot.revision}})
            except Exception:
                FAILED.inc()
                log.exception("catalog refresh failed; serving the previous snapshot")

    def _build(self, stored: StoredCatalog) -> CatalogSnapshot:
        development = {p.slug for p in stored.providers if p.development_only}
        rows = [
            RouteRow(
                provider=row.provider, model_id=row.model_id,
                upstream_model_id=row.upstream_model_id, region=row.region, priority=row.priority,
                adapter=row.adapter, file_active=row.file_active, operator_active=row.operator_active,
                is_active=effective_activity(row.file_active, row.operator_active,
                                             row.provider in development, self._sandbox_enabled),
            )
            for row in stored.rows
        ]
        return CatalogSnapshot(revision=stored.revision, version=stored.version,
                               providers=stored.providers, models=stored.models, rows=rows)

    # ---- request path -------------------------------------------------------

    def resolve(self, model: str, provider_override: str, feature: str) -> Resolution:
        try:
            resolution = self._snapshot.resolve(model, provider_override, feature)
        except ServiceError as refusal:
            resolution_refused(refusal.reason.value)
            raise
        RESOLVED.inc()
        return resolution

    def quote(self, model_id: str, size: str, quality: str | None, n: int) -> catalog_pb2.QuotePriceResponse:
        model = self._priced_image_model(model_id)
        return self._pricer.quote(model.cost, size, quality, _image_count(n, "n"))

    def _priced_image_model(self, model_id: str) -> ModelInfo:
        model = self._snapshot.model(model_id)
        if not model.outputs_images:
            raise ServiceError(Reason.MODALITY_MISMATCH,
                               f"Model '{model.id}' does not generate images; it has no image price",
                               field="model", metadata={"model": model.id})
        return model

    # ---- operations ------------------------------------------------------------

    async def set_active(self, provider: str, model_id: str, active: bool, actor: str) -> RouteRow:
        provider, model_id = provider.strip().lower(), model_id.strip()
        if not provider or not model_id:
            raise ServiceError(Reason.INVALID_REQUEST, "provider and model are both required")
        info = self._snapshot.providers.get(provider)
        if active and info is not None and info.development_only and not self._sandbox_enabled:
            raise ServiceError(Reason.INVALID_REQUEST,
                               f"Provider '{provider}' is development-only and disabled here "
                               "(QUANTIZED_CATALOG_ENABLE_SANDBOX is not true)")
        async with self._write_lock:
            await self._repository.set_operator_active(provider, model_id, active, actor)
            await self.refresh(force=True)
        return next(row for row in self._snapshot.rows_for(model_id) if row.provider == provider)

    async def reload(self, actor: str) -> ReloadSummary:
        """Re-read the catalog file; a malformed file changes nothing."""
        try:
            catalog = load_catalog_file(self._catalog_path)
        except CatalogFileError as exc:
            raise ServiceError(Reason.INVALID_REQUEST,
                               f"catalog file rejected, previous catalog kept: {exc}") from None
        async with self._write_lock:
            result = await self._repository.apply_file(catalog, actor=actor, action="catalog.reload",
                                                       audit_unchanged=True)
            await self.refresh(force=True)
        log.info("catalog reloaded", extra={"fields": {
            "version": result.version, "changed": result.changed, "actor": actor}})
        return ReloadSummary(result.version, result.models, result.provider_models, result.changed)

    async def audit_events(self, limit: int) -> list[AuditRecord]:
        if limit < 0:
            raise ServiceError(Reason.INVALID_REQUEST, "limit must not be negative", field="limit")
        return await self._repository.audit_events(min(limit or DEFAULT_AUDIT_LIMIT, MAX_AUDIT_LIMIT))


def _image_count(n: int, field: str) -> int:
    if n < 0:
        raise ServiceError(Reason.INVALID_REQUEST, f"{field} must not be negative", field=field)
    return n or 1
