"""The only code that speaks SQL for billing. Every public method is one
transaction (except this generic apply_batch: one per operation); a method that
raises has written nothing.

Ledger entries (signed, in the account's available balance):
  grant   +amount          credits added by an operator
  hold    -amount          Reserve: the worst case leaves the available balance
  settle  +(held-charged)  Settle: the unused part comes back; the charge is
                           what the hold row and this row leave behind together
  release +amount          Release: everything comes back
  expire  +amount          the reaper closed a hold nobody settled
So the balance always equals the sum of the ledger, holds included.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_svc.domain import (
    Account,
    AccountView,
    ApiKeyInfo,
    Closed,
    Hold,
    Identity,
    LedgerOp,
    LedgerOutcome,
    ReleaseOp,
    ReserveOp,
    Usage,
    UsageEntry,
    new_id,
)
from billing_svc.storage.engine import Database
from billing_svc.storage.schema import accounts, api_keys, holds, ledger, usage_records
from quantized_runtime.errors import Reason, ServiceError

OPEN = "open"

# Statements on the request path are built once; SQLAlchemy caches their compiled form.
_AUTHENTICATE_KEY = (
    select(api_keys.c.id, api_keys.c.account_id, accounts.c.unlimited)
    .join(accounts, accounts.c.id == api_keys.c.account_id)
    .where(api_keys.c.secret_hash == bindparam("secret_hash"), api_keys.c.revoked_at.is_(None))
)
_ACCOUNT_UNLIMITED = select(accounts.c.unlimited).where(accounts.c.id == bindparam("account_id"))

# The conditional debit: takes the row lock on PostgreSQL and re-checks the
# balance against the committed row, so concurrent reserves cannot overdraw.
_DEBIT_FOR_HOLD = (
    update(accounts)
    .where(accounts.c.id == bindparam("account_id"),
           or_(accounts.c.unlimited, accounts.c.balance >= bindparam("amount")))
    .values(balance=accounts.c.balance - bindparam("amount"),
            held=accounts.c.held + bindparam("amount"))
    .returning(accounts.c.unlimited)
)
_CREDIT_ON_CLOSE = (
    update(accounts)
    .where(accounts.c.id == bindparam("account_id"))
    .values(balance=accounts.c.balance + bindparam("refund"),
            held=accounts.c.held - bindparam("amount"))
    .returning(accounts.c.balance, accounts.c.unlimited)
)
_INSERT_LEDGER = ledger.insert()
_INSERT_USAGE = usage_records.insert()


def _close_hold(status: str, *, with_charge: bool) -> Any:
    conditions = [holds.c.id == bindparam("hold_id"), holds.c.status == OPEN,
                  holds.c.expires_at > bindparam("now")]
    values: dict[str, Any] = {"status": status, "closed_at": bindparam("now"),
                              "charged": bindparam("charged")}
    if with_charge:
        conditions.append(holds.c.amount >= bindparam("charged"))
    return (update(holds).where(*conditions).values(**values)
            .returning(holds.c.account_id, holds.c.amount, holds.c.request_id))


_SETTLE_HOLD = _close_hold("settled", with_charge=True)
_RELEASE_HOLD = _close_hold("released", with_charge=False)


def _account(row: Row[Any]) -> Account:
    return Account(account_id=row.id, name=row.name, unlimited=bool(row.unlimited),
                   balance=row.balance, held=row.held, created_at=row.created_at)


def _key_info(row: Row[Any]) -> ApiKeyInfo:
    return ApiKeyInfo(key_id=row.id, account_id=row.account_id, prefix=row.prefix,
                      revoked=row.revoked_at is not None, created_at=row.created_at)


def _hold(row: Row[Any]) -> Hold:
    return Hold(hold_id=row.id, account_id=row.account_id, request_id=row.request_id,
                amount=row.amount, expires_at=row.expires_at)


def not_found(what: str, identifier: str) -> ServiceError:
    return ServiceError(Reason.NOT_FOUND, f"{what} {identifier!r} not found")


def insufficient_credits(amount: int, available: int) -> ServiceError:
    return ServiceError(
        Reason.INSUFFICIENT_CREDITS,
        f"insufficient credits: the request may cost up to {amount} micro-credits "
        f"and the account has {available} available",
        metadata={"required_micro_credits": str(amount),
                  "available_micro_credits": str(available)})


def unclosable_hold(hold_id: str, status: str, expires_at: datetime, amount: int,
                    now: datetime, charged: int) -> ServiceError:
    """Why an existing hold could not be closed."""
    if status != OPEN:
        return ServiceError(Reason.HOLD_CLOSED, f"hold {hold_id!r} is already {status}")
    if expires_at <= now:
        return ServiceError(Reason.HOLD_CLOSED, f"hold {hold_id!r} has expired")
    if charged > amount:
        return ServiceError(
            Reason.INVALID_REQUEST,
            f"cannot charge {charged} micro-credits against a hold of {amount}",
            field="amount_micro_credits")
    return ServiceError(Reason.INTERNAL, f"hold {hold_id!r} could not be closed")


class _RetriedRequest(Exception):
    """A Reserve found its request id already holding: roll back, answer with that hold."""


class BillingRepository:
    """Every operation as a multi-statement transaction; the whole of billing on
    SQLite, and the administration and reaping on PostgreSQL."""

    def __init__(self, database: Database) -> None:
        self._db = database
        insert = postgresql.insert if database.dialect == "postgresql" else sqlite.insert
        # A second Reserve with the same request id inserts nothing (and, on
        # PostgreSQL, waits for the first one's transaction to decide).
        self._insert_hold_once = (
            insert(holds).on_conflict_do_nothing(index_elements=["account_id", "request_id"])
            .returning(holds.c.id))

    # Identity

    async def identity_for_key_hash(self, secret_hash: str) -> Identity | None:
        async with self._db.read() as conn:
            row = (await conn.execute(_AUTHENTICATE_KEY, {"secret_hash": secret_hash})).first()
        if row is None:
            return None
        return Identity(account_id=row.account_id, unlimited=bool(row.unlimited), key_id=row.id)

    async def identity_for_account(self, account_id: str) -> Identity | None:
        async with self._db.read() as conn:
            unlimited = (await conn.execute(_ACCOUNT_UNLIMITED,
                                            {"account_id": account_id})).scalar()
        if unlimited is None:
            return None
        return Identity(account_id=account_id, unlimited=bool(unlimited))

    # Holds

    async def reserve(self, account_id: str, amount: int, request_id: str,
                      now: datetime, expires_at: datetime) -> Hold:
        """A new hold, or the existing one of this (account, request id)."""
        hold_id = new_id("hold")
        try:
            async with self._db.write() as conn:
                debited = (await conn.execute(
                    _DEBIT_FOR_HOLD, {"account_id": account_id, "amount": amount})).first()
                if debited is None:
                    existing = await self._hold_for_request(conn, account_id, request_id)
                    if existing is not None:
                        return existing
                    raise await self._cannot_debit(conn, account_id, amount)
                inserted = (await conn.execute(self._insert_hold_once, {
                    "id": hold_id, "account_id": account_id, "request_id": request_id,
                    "amount": amount, "status": OPEN, "created_at": now,
                    "expires_at": expires_at})).first()
                if inserted is None:
                    raise _RetriedRequest
                await conn.execute(_INSERT_LEDGER, {
                    "account_id": account_id, "kind": "hold", "amount": -amount,
                    "hold_id": hold_id, "created_at": now})
                return Hold(hold_id, account_id, request_id, amount, expires_at)
        except _RetriedRequest:
            async with self._db.read() as conn:
                existing = await self._hold_for_request(conn, account_id, request_id)
            if existing is None:
                raise ServiceError(Reason.INTERNAL, "hold for a retried request vanished") from None
            return existing

    async def _cannot_debit(self, conn: AsyncConnection, account_id: str,
                            amount: int) -> ServiceError:
        row = (await conn.execute(select(accounts.c.balance)
                                  .where(accounts.c.id == account_id))).first()
        if row is None:
            return not_found("account", account_id)
        return insufficient_credits(amount, row.balance)

    async def settle(self, hold_id: str, charged: int, usage: Usage, now: datetime) -> Closed:
        async with self._db.write() as conn:
            closed = (await conn.execute(
                _SETTLE_HOLD, {"hold_id": hold_id, "now": now, "charged": charged})).first()
            if closed is None:
                raise await self._unclosable(conn, hold_id, now, charged)
            refund = closed.amount - charged
            balance = await self._credit_on_close(conn, closed, hold_id, "settle", refund, now)
            await conn.execute(_INSERT_USAGE, {
                "account_id": closed.account_id, "hold_id": hold_id,
                "request_id": closed.request_id, "model_id": usage.model_id,
                "provider": usage.provider, "images": usage.images,
                "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
                "total_tokens": usage.total_tokens, "megapixels": usage.megapixels,
                "credits": charged, "end_user": usage.user, "created_at": now})
            return Closed(charged=charged, balance=balance)

    async def release(self, hold_id: str, now: datetime) -> Closed:
        async with self._db.write() as conn:
            closed = (await conn.execute(
                _RELEASE_HOLD, {"hold_id": hold_id, "now": now, "charged": 0})).first()
            if closed is None:
                raise await self._unclosable(conn, hold_id, now, 0)
            balance = await self._credit_on_close(conn, closed, hold_id, "release",
                                                  closed.amount, now)
            return Closed(charged=0, balance=balance)

    async def apply_batch(self, operations: Sequence[LedgerOp], now: datetime,
                          expires_at: datetime) -> list[LedgerOutcome]:
        """The operations in order, one outcome each: the value, or the ServiceError
        of a refusal (which wrote nothing). Any other exception fails the batch.

        This fallback gives each operation a transaction of its own (outcomes are
        the same; the batch is just not atomic); the repositories of the request
        path override it with one transaction for the whole batch."""
        outcomes: list[LedgerOutcome] = []
        for op in operations:
            try:
                if isinstance(op, ReserveOp):
                    outcomes.append(await self.reserve(op.account_id, op.amount,
                                                       op.request_id, now, expires_at))
                elif isinstance(op, ReleaseOp):
                    outcomes.append(await self.release(op.hold_id, now))
                else:
                    outcomes.append(await self.settle(op.hold_id, op.amount, op.usage, now))
            except ServiceError as refusal:
                outcomes.append(refusal)
        return outcomes

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
                await conn.execute(_CREDIT_ON_CLOSE, {
                    "account_id": account_id, "refund": total, "amount": total})
            if expired:
                await conn.execute(_INSERT_LEDGER, [
                    {"account_id": row.account_id, "kind": "expire", "amount": row.unspent,
                     "hold_id": row.id, "created_at": now} for row in expired])
            return len(expired)

    async def _credit_on_close(self, conn: AsyncConnection, closed: Row[Any], hold_id: str,
                               kind: str, refund: int, now: datetime) -> int | None:
        account = (await conn.execute(_CREDIT_ON_CLOSE, {
            "account_id": closed.account_id, "refund": refund, "amount": closed.amount})).one()
        await conn.execute(_INSERT_LEDGER, {
            "account_id": closed.account_id, "kind": kind, "amount": refund,
            "hold_id": hold_id, "created_at": now})
        return None if account.unlimited else account.balance

    async def _unclosable(self, conn: AsyncConnection, hold_id: str, now: datetime,
                          charged: int) -> ServiceError:
        """Why a hold could not be closed (nothing was written)."""
        row = (await conn.execute(select(holds.c.status, holds.c.expires_at, holds.c.amount)
                                  .where(holds.c.id == hold_id))).first()
        if row is None:
            return not_found("hold", hold_id)
        return unclosable_hold(hold_id, row.status, row.expires_at, row.amount, now, charged)

    async def _hold_for_request(self, conn: AsyncConnection, account_id: str,
                                request_id: str) -> Hold | None:
        row = (await conn.execute(select(holds).where(
            holds.c.account_id == account_id, holds.c.request_id == request_id))).first()
        return _hold(row) if row is not None else None

    # Administration

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
            await self._insert_key(conn, account_id, key_id, key_prefix, key_hash, now)
        account = Account(account_id, name, unlimited, credits, 0, now)
        return account, ApiKeyInfo(key_id, account_id, key_prefix, False, now)

    async def create_key(self, account_id: str, key_id: str, key_prefix: str, key_hash: str,
                         now: datetime) -> ApiKeyInfo:
        async with self._db.write() as conn:
            exists = (await conn.execute(_ACCOUNT_UNLIMITED, {"account_id": account_id})).first()
            if exists is None:
                raise not_found("account", account_id)
            await self._insert_key(conn, account_id, key_id, key_prefix, key_hash, now)
        return ApiKeyInfo(key_id, account_id, key_prefix, False, now)

    async def _insert_key(self, conn: AsyncConnection, account_id: str, key_id: str,
                          prefix: str, secret_hash: str, now: datetime) -> None:
        await conn.execute(api_keys.insert(), {
            "id": key_id, "account_id": account_id, "prefix": prefix,
            "secret_hash": secret_hash, "created_at": now, "revoked_at": None})

    async def revoke_key(self, key_id: str, now: datetime) -> ApiKeyInfo:
        """Revoke once; revoking a revoked key changes nothing and reports it."""
        async with self._db.write() as conn:
            await conn.execute(update(api_keys)
                               .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                               .values(revoked_at=now))
            row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).first()
            if row is None:
                raise not_found("API key", key_id)
            return _key_info(row)

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

    async def account_view(self, account_id: str, usage_limit: int) -> AccountView:
        async with self._db.read() as conn:
            row = (await conn.execute(select(accounts)
                                      .where(accounts.c.id == account_id))).first()
            if row is None:
                raise not_found("account", account_id)
            keys = (await conn.execute(select(api_keys)
                                       .where(api_keys.c.account_id == account_id)
                                       .order_by(api_keys.c.created_at, api_keys.c.id))).all()
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
            keys=[_key_info(k) for k in keys],
            open_holds=[_hold(h) for h in open_holds],
            recent_usage=[UsageEntry(
                time=u.created_at, request_id=u.request_id, credits=u.credits,
                usage=Usage(model_id=u.model_id, provider=u.provider, images=u.images,
                            input_tokens=u.input_tokens, output_tokens=u.output_tokens,
                            total_tokens=u.total_tokens, megapixels=u.megapixels,
                            user=u.end_user)) for u in usage])
