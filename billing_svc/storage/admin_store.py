"""Administration and reaping: account creation, API keys, grants, the account
view and the expiry of overdue holds. These are not on the request path, so they
share one SQLAlchemy implementation across both databases (multi-statement
transactions through `Database.write` and `Database.read`), apart from the money
path that each database implements for itself (money_store.py).

They write the same ledger rows as the money path (see money_store.py): a
`grant` for credits added, an `expire` for a hold the reaper closed.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime
from typing import Any

from sqlalchemy import BigInteger, Table, bindparam, cast, func, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_svc.domain import (
    Account,
    AccountView,
    ApiKeyInfo,
    CapChange,
    Hold,
    LimitChange,
    LimitSetting,
    SpendingCaps,
    Usage,
    UsageEntry,
    new_id,
)
from billing_svc.storage.engine import Database
from billing_svc.storage.key_caps import KeyState, stored_cap
from billing_svc.storage.money_store import OPEN, not_found
from billing_svc.storage.schema import accounts, api_keys, holds, ledger, usage_records

_ACCOUNT_EXISTS = select(accounts.c.id).where(accounts.c.id == bindparam("account_id"))
_CREDIT_EXPIRED = (
    update(accounts)
    .where(accounts.c.id == bindparam("account_id"))
    .values(balance=accounts.c.balance + bindparam("amount"),
            held=accounts.c.held - bindparam("amount"))
)
_INSERT_LEDGER = ledger.insert()


def _limits(row: Row[Any]) -> LimitSetting:
    return LimitSetting(row.requests_per_minute, row.max_concurrent_requests)


def _account(row: Row[Any]) -> Account:
    return Account(account_id=row.id, name=row.name, unlimited=bool(row.unlimited),
                   balance=row.balance, held=row.held, created_at=row.created_at,
                   limits=_limits(row))


def _key_info(row: Row[Any], today: date, held: int) -> ApiKeyInfo:
    state = KeyState(row.account_id, SpendingCaps(row.daily_cap, row.total_cap), row.spent_total,
                     row.spent_on_day, row.spend_day, held)
    return ApiKeyInfo(key_id=row.id, account_id=row.account_id, prefix=row.prefix,
                      revoked=row.revoked_at is not None, created_at=row.created_at,
                      limits=_limits(row), caps=state.caps, spend=state.spend(today))


def _cap_values(change: CapChange) -> dict[str, int | None]:
    """The cap columns an update writes: each cap given (0: none, stored as NULL)."""
    values: dict[str, int | None] = {}
    if change.daily is not None:
        values["daily_cap"] = stored_cap(change.daily)
    if change.total is not None:
        values["total_cap"] = stored_cap(change.total)
    return values


# The worst cases of a key's open holds, counted against its caps.
# PostgreSQL sums BIGINTs as NUMERIC: cast back.
_KEY_HELD = (select(holds.c.api_key_id, cast(func.sum(holds.c.amount), BigInteger).label("held"))
             .where(holds.c.status == OPEN, holds.c.api_key_id.is_not(None))
             .group_by(holds.c.api_key_id))


def _limit_values(change: LimitChange) -> dict[str, int | None]:
    """The columns an update writes: both cleared first when asked, then each value given."""
    values: dict[str, int | None] = (
        {"requests_per_minute": None, "max_concurrent_requests": None} if change.use_defaults else {})
    if change.limits.requests_per_minute is not None:
        values["requests_per_minute"] = change.limits.requests_per_minute
    if change.limits.max_concurrent_requests is not None:
        values["max_concurrent_requests"] = change.limits.max_concurrent_requests
    return values


def _hold(row: Row[Any]) -> Hold:
    return Hold(hold_id=row.id, account_id=row.account_id, request_id=row.request_id,
                amount=row.amount, expires_at=row.expires_at)


class AdminStore:
    """Every public method is one transaction; a method that raises has written nothing."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def create_account(self, name: str, credits: int, unlimited: bool, key_id: str,
                             key_prefix: str, key_hash: str, now: datetime,
                             ) -> tuple[Account, ApiKeyInfo]:
        account_id = new_id("acct")
        async with self._db.write() as conn:
            await conn.execute(accounts.insert(), {
                "id": account_id, "name": name, "unlimited": unlimited, "balance": credits,
                "held": 0, "created_at": now})
            if credits:
                await conn.execute(_INSERT_LEDGER, {
                    "account_id": account_id, "kind": "grant", "amount": credits,
                    "hold_id": None, "created_at": now})
            await self._insert_key(conn, account_id, key_id, key_prefix, key_hash, now, CapChange())
        account = Account(account_id, name, unlimited, credits, 0, now)
        return account, ApiKeyInfo(key_id, account_id, key_prefix, False, now)

    async def create_key(self, account_id: str, key_id: str, key_prefix: str, key_hash: str,
                         now: datetime, caps: CapChange) -> ApiKeyInfo:
        async with self._db.write() as conn:
            exists = (await conn.execute(_ACCOUNT_EXISTS, {"account_id": account_id})).first()
            if exists is None:
                raise not_found("account", account_id)
            await self._insert_key(conn, account_id, key_id, key_prefix, key_hash, now, caps)
        return ApiKeyInfo(key_id, account_id, key_prefix, False, now,
                          caps=SpendingCaps(stored_cap(caps.daily), stored_cap(caps.total)))

    async def _insert_key(self, conn: AsyncConnection, account_id: str, key_id: str,
                          prefix: str, secret_hash: str, now: datetime, caps: CapChange) -> None:
        await conn.execute(api_keys.insert(), {
            "id": key_id, "account_id": account_id, "prefix": prefix,
            "secret_hash": secret_hash, "created_at": now, "revoked_at": None,
            "daily_cap": stored_cap(caps.daily), "total_cap": stored_cap(caps.total)})

    async def _key_held(self, conn: AsyncConnection, key_id: str) -> int:
        held = (await conn.execute(_KEY_HELD.where(holds.c.api_key_id == key_id))).first()
        return 0 if held is None else held.held

    async def revoke_key(self, key_id: str, now: datetime) -> ApiKeyInfo:
        """Revoke once; revoking a revoked key changes nothing and reports it."""
        async with self._db.write() as conn:
            await conn.execute(update(api_keys)
                               .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                               .values(revoked_at=now))
            row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).first()
            if row is None:
                raise not_found("API key", key_id)
            return _key_info(row, now.date(), await self._key_held(conn, key_id))

    async def update_key_limits(self, key_id: str, change: LimitChange, now: datetime) -> ApiKeyInfo:
        async with self._db.write() as conn:
            row = await self._update_row(conn, api_keys, key_id, _limit_values(change), "API key")
            return _key_info(row, now.date(), await self._key_held(conn, key_id))

    async def update_key_caps(self, key_id: str, change: CapChange, now: datetime) -> ApiKeyInfo:
        async with self._db.write() as conn:
            row = await self._update_row(conn, api_keys, key_id, _cap_values(change), "API key")
            return _key_info(row, now.date(), await self._key_held(conn, key_id))

    async def update_account_limits(self, account_id: str, change: LimitChange) -> Account:
        async with self._db.write() as conn:
            return _account(await self._update_row(conn, accounts, account_id, _limit_values(change),
                                                   "account"))

    @staticmethod
    async def _update_row(conn: AsyncConnection, table: Table, row_id: str,
                          values: dict[str, int | None], what: str) -> Row[Any]:
        """The row after the update (one that sets nothing only reads it)."""
        statement = select(table).where(table.c.id == row_id)
        if values:
            statement = update(table).where(table.c.id == row_id).values(**values).returning(*table.c)
        row = (await conn.execute(statement)).first()
        if row is None:
            raise not_found(what, row_id)
        return row

    async def grant(self, account_id: str, amount: int, now: datetime) -> Account:
        async with self._db.write() as conn:
            row = (await conn.execute(
                update(accounts).where(accounts.c.id == account_id)
                .values(balance=accounts.c.balance + amount)
                .returning(*accounts.c))).first()
            if row is None:
                raise not_found("account", account_id)
            await conn.execute(_INSERT_LEDGER, {
                "account_id": account_id, "kind": "grant", "amount": amount,
                "hold_id": None, "created_at": now})
            return _account(row)

    async def account_view(self, account_id: str, usage_limit: int, now: datetime) -> AccountView:
        async with self._db.read() as conn:
            row = (await conn.execute(select(accounts)
                                      .where(accounts.c.id == account_id))).first()
            if row is None:
                raise not_found("account", account_id)
            keys = (await conn.execute(select(api_keys)
                                       .where(api_keys.c.account_id == account_id)
                                       .order_by(api_keys.c.created_at, api_keys.c.id))).all()
            key_held = {row.api_key_id: row.held for row in (await conn.execute(
                _KEY_HELD.where(holds.c.account_id == account_id))).all()}
            open_holds = (await conn.execute(select(holds)
                                             .where(holds.c.account_id == account_id,
                                                    holds.c.status == OPEN)
                                             .order_by(holds.c.expires_at))).all()
            usage = (await conn.execute(select(usage_records)
                                        .where(usage_records.c.account_id == account_id)
                                        .order_by(usage_records.c.created_at.desc(),
                                                  usage_records.c.id.desc())
                                        .limit(usage_limit))).all()
        return AccountView(
            account=_account(row),
            keys=[_key_info(k, now.date(), key_held.get(k.id, 0)) for k in keys],
            open_holds=[_hold(h) for h in open_holds],
            recent_usage=[UsageEntry(
                time=u.created_at, request_id=u.request_id, credits=u.credits,
                usage=Usage(model_id=u.model_id, provider=u.provider, images=u.images,
                            input_tokens=u.input_tokens, output_tokens=u.output_tokens,
                            total_tokens=u.total_tokens, megapixels=u.megapixels,
                            user=u.end_user)) for u in usage])

    # Reaping

    async def count_open_holds(self) -> dict[str, int]:
        """Open holds by kind (`request`, `lease`)."""
        async with self._db.read() as conn:
            rows = (await conn.execute(select(holds.c.kind, func.count())
                                       .where(holds.c.status == OPEN).group_by(holds.c.kind))).all()
        return {row[0]: row[1] for row in rows}

    async def expire_due_holds(self, now: datetime, batch_size: int) -> int:
        """Close up to batch_size expired open holds and leases, returning what
        they hold unspent (a request hold: all of it; a lease: amount - charged)."""
        async with self._db.write() as conn:
            due = (select(holds.c.id)
                   .where(holds.c.status == OPEN, holds.c.expires_at <= now)
                   .order_by(holds.c.expires_at).limit(batch_size)
                   .with_for_update(skip_locked=True))
            expired = (await conn.execute(
                update(holds)
                .where(holds.c.id.in_(due.scalar_subquery()), holds.c.status == OPEN)
                # A request hold's charged is NULL while open; a lease's is kept.
                .values(status="expired", closed_at=now,
                        charged=func.coalesce(holds.c.charged, 0))
                .returning(holds.c.id, holds.c.account_id,
                           (holds.c.amount - holds.c.charged).label("unspent")))).all()
            per_account: dict[str, int] = defaultdict(int)
            for row in expired:
                per_account[row.account_id] += row.unspent
            # Accounts in a fixed order, so two reapers can never deadlock.
            for account_id in sorted(per_account):
                total = per_account[account_id]
                await conn.execute(_CREDIT_EXPIRED, {"account_id": account_id, "amount": total})
            if expired:
                await conn.execute(_INSERT_LEDGER, [
                    {"account_id": row.account_id, "kind": "expire", "amount": row.unspent,
                     "hold_id": row.id, "created_at": now} for row in expired])
            return len(expired)

