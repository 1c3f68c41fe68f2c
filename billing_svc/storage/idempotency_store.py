"""The edge's idempotency keys in billing's database (docs/billing.md,
"Idempotency keys"). Not on the hot path (only requests that carry an
Idempotency-Key come here), so one SQLAlchemy implementation serves both
databases; only the upsert is spelled per dialect.

A claim is one INSERT ... ON CONFLICT DO UPDATE that takes the key over only
when its row has expired: on PostgreSQL the conflicting row is locked by the
statement, on SQLite the write transaction holds the file's write lock, so two
attempts can never both claim one key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from billing_svc.storage.engine import Database
from billing_svc.storage.schema import idempotency_keys

RUNNING = "running"
COMPLETED = "completed"
TOO_LARGE = "too_large"
FAILED_AFTER_GENERATION = "failed_after_generation"
FINAL_STATES = frozenset({COMPLETED, TOO_LARGE, FAILED_AFTER_GENERATION})


@dataclass(frozen=True)
class KeyRecord:
    """A key as it stands; `claimed` when the claim that read it took it."""

    claimed: bool
    state: str
    fingerprint: bytes
    response: bytes | None


_insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


class IdempotencyStore:
    """Every method is one transaction."""

    def __init__(self, database: Database) -> None:
        self._db = database
        self._insert: Any = _insert[database.dialect]

    async def claim(self, account_id: str, key: str, fingerprint: bytes, owner: str,
                    now: datetime, running_until: datetime) -> KeyRecord:
        table = idempotency_keys
        values = {"account_id": account_id, "key": key, "fingerprint": fingerprint, "owner": owner,
                  "state": RUNNING, "response": None, "created_at": now, "expires_at": running_until}
        statement = self._insert(table).values(values)
        statement = statement.on_conflict_do_update(
            index_elements=[table.c.account_id, table.c.key],
            set_={name: statement.excluded[name] for name in values if name not in ("account_id", "key")},
            where=table.c.expires_at <= now,
        ).returning(table.c.owner)
        async with self._db.write() as conn:
            taken = (await conn.execute(statement)).first()
            if taken is not None and taken.owner == owner:
                return KeyRecord(True, RUNNING, fingerprint, None)
            row = (await conn.execute(
                select(table.c.state, table.c.fingerprint, table.c.response)
                .where(table.c.account_id == account_id, table.c.key == key))).one()
        return KeyRecord(False, row.state, bytes(row.fingerprint),
                         None if row.response is None else bytes(row.response))

    async def complete(self, account_id: str, key: str, owner: str, state: str,
                       response: bytes | None, retain_until: datetime) -> bool:
        table = idempotency_keys
        async with self._db.write() as conn:
            result = await conn.execute(
                update(table)
                .where(table.c.account_id == account_id, table.c.key == key, table.c.owner == owner,
                       table.c.state == RUNNING)
                .values(state=state, response=response, expires_at=retain_until))
        return bool(result.rowcount)

    async def release(self, account_id: str, key: str, owner: str) -> bool:
        table = idempotency_keys
        async with self._db.write() as conn:
            result = await conn.execute(
                delete(table)
                .where(table.c.account_id == account_id, table.c.key == key, table.c.owner == owner,
                       table.c.state == RUNNING))
        return bool(result.rowcount)

    async def forget_expired(self, now: datetime) -> int:
        """Delete every row past its expiry (a claim taken over later would overwrite it anyway)."""
        async with self._db.write() as conn:
            result = await conn.execute(delete(idempotency_keys).where(idempotency_keys.c.expires_at <= now))
        return int(result.rowcount)
