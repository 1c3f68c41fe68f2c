"""The catalog's storage: a narrow repository over SQLAlchemy async (SQLite or PostgreSQL)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import TypeAdapter
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from quantized_runtime.clock import as_utc, utc_now
from quantized_runtime.errors import Reason, ServiceError

from catalog_svc import tables
from catalog_svc.catalog_file import CatalogFile, Constraints, Cost, ModelEntry
from catalog_svc.snapshot import ModelInfo, ProviderInfo

_COST = TypeAdapter(Cost)


@dataclass(frozen=True)
class StoredRow:
    provider: str
    model_id: str
    upstream_model_id: str
    region: str
    priority: int
    adapter: str
    file_active: bool
    operator_active: bool | None


@dataclass(frozen=True)
class StoredCatalog:
    revision: int
    version: str
    providers: list[ProviderInfo]
    models: list[ModelInfo]
    rows: list[StoredRow]


@dataclass(frozen=True)
class AuditRecord:
    time: datetime
    actor: str
    action: str
    detail: str


@dataclass(frozen=True)
class ApplyResult:
    changed: bool
    version: str
    models: int
    provider_models: int
    detail: str


class CatalogRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def revision(self) -> int:
        async with self._engine.connect() as conn:
            value = await conn.scalar(
                sa.select(tables.catalog_state.c.revision).where(tables.catalog_state.c.id == 1))
        return int(value or 0)

    async def load(self) -> StoredCatalog:
        async with self._engine.connect() as conn:
            # The revision is read first: a write landing mid-load leaves the snapshot
            # with an older revision than its data, so the next poll reloads it.
            state = (await conn.execute(sa.select(tables.catalog_state).where(
                tables.catalog_state.c.id == 1))).one()
            provider_rows = (await conn.execute(
                sa.select(tables.providers).order_by(tables.providers.c.slug))).all()
            model_rows = (await conn.execute(
                sa.select(tables.models).order_by(tables.models.c.position, tables.models.c.id))).all()
            route_rows = (await conn.execute(sa.select(tables.provider_models))).all()
        return StoredCatalog(
            revision=int(state.revision),
            version=state.version,
            providers=[ProviderInfo(r.slug, r.name, bool(r.development_only)) for r in provider_rows],
            models=[_model_info(r) for r in model_rows],
            rows=[_stored_row(r) for r in route_rows],
        )

    async def apply_file(self, catalog: CatalogFile, *, actor: str, action: str,
                         audit_unchanged: bool) -> ApplyResult:
        """Make the stored catalog match the file; operator activity decisions are kept."""
        async with self._engine.begin() as conn:
            previous_version = await _lock_state(conn)
            changes = await _sync_providers(conn, catalog)
            changes += await _sync_models(conn, catalog)
            changes += await _sync_rows(conn, catalog)
            changed = bool(changes) or previous_version != catalog.version
            rows = sum(len(model.routes) for model in catalog.models)
            header = (f"version {previous_version or '(none)'} -> {catalog.version}: "
                      f"{len(catalog.models)} models, {rows} provider-model rows")
            detail = header + ("; " + "; ".join(changes) if changes else "; no changes")
            if changed:
                await _bump_revision(conn, catalog.version)
            if changed or audit_unchanged:
                await _audit(conn, actor, action, detail)
        return ApplyResult(changed, catalog.version, len(catalog.models), rows, detail)

    async def set_operator_active(self, provider: str, model_id: str, active: bool,
                                  actor: str) -> StoredRow:
        pm = tables.provider_models
        async with self._engine.begin() as conn:
            await _lock_state(conn)
            if await conn.scalar(sa.select(tables.providers.c.slug).where(
                    tables.providers.c.slug == provider)) is None:
                known = (await conn.scalars(sa.select(tables.providers.c.slug).order_by(
                    tables.providers.c.slug))).all()
                raise ServiceError(Reason.NOT_FOUND, f"Unknown provider '{provider}' "
                                   f"(known providers: {', '.join(known)})")
            if await conn.scalar(sa.select(tables.models.c.id).where(
                    tables.models.c.id == model_id)) is None:
                raise ServiceError(Reason.NOT_FOUND, f"Unknown model '{model_id}'")
            where = (pm.c.provider == provider) & (pm.c.model_id == model_id)
            before = (await conn.execute(sa.select(pm).where(where))).one_or_none()
            if before is None:
                offered = (await conn.scalars(sa.select(pm.c.provider).where(
                    pm.c.model_id == model_id).order_by(pm.c.provider))).all()
                raise ServiceError(Reason.NOT_FOUND,
                                   f"Provider '{provider}' has no row for model '{model_id}' "
                                   f"(rows exist for: {', '.join(offered) or 'none'})")
            await conn.execute(pm.update().where(where).values(
                operator_active=active, operator_changed_at=utc_now()))
            await _bump_revision(conn, None)
            previous = _describe_activity(before.operator_active, before.file_active)
            await _audit(conn, actor, "provider_model.enable" if active else "provider_model.disable",
                         f"{provider}/{model_id}: is_active {previous} -> {str(active).lower()}")
            after = (await conn.execute(sa.select(pm).where(where))).one()
        return _stored_row(after)

    async def audit_events(self, limit: int) -> list[AuditRecord]:
        events = tables.audit_events
        async with self._engine.connect() as conn:
            rows = (await conn.execute(sa.select(events).order_by(
                events.c.time.desc(), events.c.id.desc()).limit(limit))).all()
        return [AuditRecord(as_utc(r.time), r.actor, r.action, r.detail) for r in rows]


def _describe_activity(operator_active: bool | None, file_active: bool) -> str:
    if operator_active is None:
        return f"{str(file_active).lower()} (catalog file)"
    return str(operator_active).lower()


async def _lock_state(conn: AsyncConnection) -> str:
    """Serialise catalog writers: a row lock on PostgreSQL, the database write lock on SQLite.

    Must be the first statement of a write transaction.
    """
    state = tables.catalog_state
    if conn.dialect.name == "sqlite":
        # pysqlite would only begin at the first write, after this transaction's reads.
        await conn.exec_driver_sql("BEGIN IMMEDIATE")
    version = await conn.scalar(sa.select(state.c.version).where(state.c.id == 1).with_for_update())
    return str(version or "")


async def _bump_revision(conn: AsyncConnection, version: str | None) -> None:
    state = tables.catalog_state
    values: dict[str, Any] = {"revision": state.c.revision + 1, "updated_at": utc_now()}
    if version is not None:
        values["version"] = version
    await conn.execute(state.update().where(state.c.id == 1).values(**values))


async def _audit(conn: AsyncConnection, actor: str, action: str, detail: str) -> None:
    await conn.execute(tables.audit_events.insert().values(
        time=utc_now(), actor=actor, action=action, detail=detail))


def _summary(label: str, added: Sequence[str], changed: Sequence[str], removed: Sequence[str]) -> list[str]:
    parts = []
    for verb, names in (("added", added), ("changed", changed), ("removed", removed)):
        if names:
            parts.append(f"{label} {verb}: {', '.join(names)}")
    return parts


async def _sync_providers(conn: AsyncConnection, catalog: CatalogFile) -> list[str]:
    table = tables.providers
    current = {r.slug: r for r in (await conn.execute(sa.select(table))).all()}
    wanted = {p.slug: p for p in catalog.providers}
    added, changed = [], []
    for slug, entry in wanted.items():
        values = {"name": entry.name, "development_only": entry.development_only}
        if slug not in current:
            await conn.execute(table.insert().values(slug=slug, **values))
            added.append(slug)
        elif (current[slug].name, bool(current[slug].development_only)) != (entry.name, entry.development_only):
            await conn.execute(table.update().where(table.c.slug == slug).values(**values))
            changed.append(slug)
    removed = sorted(set(current) - set(wanted))
    if removed:
        # Rows of a removed provider go first (foreign key).
        await conn.execute(tables.provider_models.delete().where(
            tables.provider_models.c.provider.in_(removed)))
        await conn.execute(table.delete().where(table.c.slug.in_(removed)))
    return _summary("providers", added, changed, removed)


def _model_values(position: int, entry: ModelEntry) -> dict[str, Any]:
    return {
        "position": position,
        "created": entry.created,
        "input_modalities": list(entry.input_modalities),
        "output_modalities": list(entry.output_modalities),
        "supported_features": list(entry.supported_features),
        "watermark": entry.watermark,
        "constraints": entry.constraints.model_dump(mode="json"),
        "cost": entry.cost.model_dump(mode="json"),
    }


async def _sync_models(conn: AsyncConnection, catalog: CatalogFile) -> list[str]:
    table = tables.models
    current = {r.id: r._asdict() for r in (await conn.execute(sa.select(table))).all()}
    added, changed = [], []
    for position, entry in enumerate(catalog.models):
        values = _model_values(position, entry)
        stored = current.get(entry.id)
        if stored is None:
            await conn.execute(table.insert().values(id=entry.id, **values))
            added.append(entry.id)
        elif any(stored[key] != value for key, value in values.items()):
            await conn.execute(table.update().where(table.c.id == entry.id).values(**values))
            if any(stored[key] != value for key, value in values.items() if key != "position"):
                changed.append(entry.id)
    removed = sorted(set(current) - {m.id for m in catalog.models})
    if removed:
        await conn.execute(tables.provider_models.delete().where(
            tables.provider_models.c.model_id.in_(removed)))
        await conn.execute(table.delete().where(table.c.id.in_(removed)))
    return _summary("models", added, changed, removed)


async def _sync_rows(conn: AsyncConnection, catalog: CatalogFile) -> list[str]:
    table = tables.provider_models
    current = {(r.provider, r.model_id): r for r in (await conn.execute(sa.select(table))).all()}
    wanted = {(route.provider, model.id): route for model in catalog.models for route in model.routes}
    added, changed = [], []
    for key, route in wanted.items():
        values = {"upstream_model_id": route.upstream_model_id, "region": route.region,
                  "priority": route.priority, "adapter": route.adapter or "", "file_active": route.active}
        stored = current.get(key)
        if stored is None:
            await conn.execute(table.insert().values(provider=key[0], model_id=key[1], **values))
            added.append("/".join(key))
        elif any(getattr(stored, name) != value for name, value in values.items()):
            await conn.execute(table.update().where(
                (table.c.provider == key[0]) & (table.c.model_id == key[1])).values(**values))
            changed.append("/".join(key))
    removed = sorted(set(current) - set(wanted))
    for provider, model_id in removed:
        await conn.execute(table.delete().where(
            (table.c.provider == provider) & (table.c.model_id == model_id)))
    return _summary("provider-model rows", added, changed, ["/".join(k) for k in removed])


def _model_info(row: Any) -> ModelInfo:
    return ModelInfo(
        id=row.id,
        created=int(row.created),
        input_modalities=tuple(row.input_modalities),
        output_modalities=tuple(row.output_modalities),
        supported_features=tuple(row.supported_features),
        watermark=row.watermark,
        constraints=Constraints.model_validate(row.constraints),
        cost=_COST.validate_python(row.cost),
    )


def _stored_row(row: Any) -> StoredRow:
    return StoredRow(
        provider=row.provider,
        model_id=row.model_id,
        upstream_model_id=row.upstream_model_id,
        region=row.region,
        priority=int(row.priority),
        adapter=row.adapter,
        file_active=bool(row.file_active),
        operator_active=None if row.operator_active is None else bool(row.operator_active),
    )
