"""The money path on PostgreSQL: Authenticate, and Ledger batches. Reserve,
Settle and Release are each ONE statement, so each costs one round trip instead
of four to six: data-modifying CTEs chain the steps and write the ledger rows
listed in money_store.py. The statements go straight to asyncpg (prepared once
per connection), and so does the explanation of a refusal.

The conditional UPDATE of the account row takes its row lock, and a waiting
writer re-checks the balance against the committed row before it debits, so
concurrent Reserves cannot overdraw.

A Ledger batch runs these statements, one per operation, in one transaction on
one connection; the credit-lease operations run a few statements each on rows
the batch has locked. Its row locks last until its commit, so it first locks
every hold it closes and then every account it touches, each set in id order:
two batches (or a batch and the reaper) then never wait for each other in a
circle. A refused operation's statement changed nothing, so the batch carries
on; its explanation is read on the same connection, where the batch's own
earlier operations are visible.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from billing_svc.domain import (
    AcquireLeaseOp,
    ChargeOp,
    Charged,
    Closed,
    ExtendLeaseOp,
    Hold,
    Identity,
    LimitSetting,
    Lease,
    LeasePolicy,
    LeaseReturned,
    LedgerOp,
    LedgerOutcome,
    ReleaseOp,
    ReserveOp,
    ReturnLeaseOp,
    SettleOp,
    SpendingCaps,
    Usage,
    lease_size,
    new_id,
)
from billing_svc.storage.engine import Database
from billing_svc.storage.key_caps import KeyState, reserve_refusal
from billing_svc.storage.leases import (
    LEASE,
    REQUEST,
    LeaseState,
    charged_late,
    lease_given_as_hold,
    lease_refused,
    lease_takes_charge,
    open_lease_refusal,
    request_id_taken,
    spendable,
)
from billing_svc.storage.money_store import (
    insufficient_credits,
    not_found,
    unclosable_hold,
)
from quantized_runtime.errors import ServiceError

log = logging.getLogger("quantized.billing.postgres")

# A batch that lost a race is rolled back and run again, at most this many times
# in all: a unique violation (a concurrent Reserve of the same request id
# committed first; the rerun finds its hold), a deadlock or a serialization failure.
MAX_BATCH_ATTEMPTS = 3
_RETRYABLE = (asyncpg.UniqueViolationError, asyncpg.TransactionRollbackError)


class _Statement:
    """SQL written with :named parameters, sent with asyncpg's $1, $2, ..."""

    def __init__(self, sql: str) -> None:
        self.names: list[str] = []

        def number(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self.names:
                self.names.append(name)
            return f"${self.names.index(name) + 1}"

        self.sql = re.sub(r"(?<![:\w]):([a-z_]+)", number, sql)

    def arguments(self, params: dict[str, Any]) -> list[Any]:
        return [params[name] for name in self.names]


_AUTHENTICATE_KEY = _Statement(
    "SELECT k.id, k.account_id, a.unlimited, k.requests_per_minute AS key_rpm, "
    "k.max_concurrent_requests AS key_concurrency, a.requests_per_minute AS account_rpm, "
    "a.max_concurrent_requests AS account_concurrency, k.daily_cap, k.total_cap FROM api_keys k "
    "JOIN accounts a ON a.id = k.account_id "
    "WHERE k.secret_hash = :secret_hash AND k.revoked_at IS NULL")

_ACCOUNT_IDENTITY = _Statement(
    "SELECT unlimited, requests_per_minute, max_concurrent_requests FROM accounts WHERE id = :account_id")

# Debit only when no hold exists for the request id yet; a concurrent retry that
# slips past that check fails on the unique (account_id, request_id) instead,
# and the whole statement, debit included, is undone.
_RESERVE = _Statement("""
WITH debit AS (
    UPDATE accounts
       SET balance = balance - CAST(:amount AS BIGINT), held = held + CAST(:amount AS BIGINT)
     WHERE id = :account_id
       AND (unlimited OR balance >= CAST(:amount AS BIGINT))
       AND NOT EXISTS (SELECT 1 FROM holds
                        WHERE account_id = :account_id AND request_id = :request_id)
    RETURNING id
), new_hold AS (
    INSERT INTO holds (id, account_id, request_id, amount, status, created_at, expires_at,
                       api_key_id)
    SELECT :hold_id, id, :request_id, CAST(:amount AS BIGINT), 'open',
           CAST(:now AS TIMESTAMPTZ), CAST(:expires_at AS TIMESTAMPTZ), :api_key_id
      FROM debit
    RETURNING id, account_id
)
INSERT INTO ledger (account_id, kind, amount, hold_id, created_at)
SELECT account_id, 'hold', -CAST(:amount AS BIGINT), id, CAST(:now AS TIMESTAMPTZ)
  FROM new_hold
RETURNING id
""")


def _close_statement(status: str, ledger_kind: str, *, with_usage: bool) -> _Statement:
    charge_condition = "AND amount >= CAST(:charged AS BIGINT)" if with_usage else ""
    usage_insert = """, usage AS (
    INSERT INTO usage_records (account_id, hold_id, request_id, model_id, provider, images,
                               input_tokens, output_tokens, total_tokens, megapixels,
                               credits, end_user, api_key_id, created_at)
    SELECT account_id, id, request_id, CAST(:model_id AS VARCHAR), CAST(:provider AS VARCHAR),
           CAST(:images AS INTEGER), CAST(:input_tokens AS BIGINT),
           CAST(:output_tokens AS BIGINT), CAST(:total_tokens AS BIGINT),
           CAST(:megapixels AS DOUBLE PRECISION), CAST(:charged AS BIGINT),
           CAST(:end_user AS VARCHAR), api_key_id, CAST(:now AS TIMESTAMPTZ)
      FROM closed
), spent AS (
    UPDATE api_keys k
       SET spent_total = k.spent_total + CAST(:charged AS BIGINT),
           spent_on_day = CASE WHEN k.spend_day >= CAST(:today AS DATE)
                               THEN k.spent_on_day + CAST(:charged AS BIGINT)
                               ELSE CAST(:charged AS BIGINT) END,
           spend_day = GREATEST(k.spend_day, CAST(:today AS DATE))
      FROM closed c
     WHERE k.id = c.api_key_id
)""" if with_usage else ""
    return _Statement(f"""
WITH closed AS (
    UPDATE holds
       SET status = '{status}', charged = CAST(:charged AS BIGINT),
           closed_at = CAST(:now AS TIMESTAMPTZ)
     WHERE id = :hold_id AND kind = 'request' AND status = 'open'
           AND expires_at > CAST(:now AS TIMESTAMPTZ) {charge_condition}
    RETURNING id, account_id, amount, request_id, api_key_id
), credited AS (
    UPDATE accounts a
       SET balance = a.balance + (c.amount - CAST(:charged AS BIGINT)),
           held = a.held - c.amount
      FROM closed c
     WHERE a.id = c.account_id
    RETURNING a.balance, a.held, a.unlimited
), entry AS (
    INSERT INTO ledger (account_id, kind, amount, hold_id, created_at)
    SELECT account_id, '{ledger_kind}', amount - CAST(:charged AS BIGINT), id,
           CAST(:now AS TIMESTAMPTZ)
      FROM closed
){usage_insert}
SELECT balance, held, unlimited FROM credited
""")


_SETTLE = _close_statement("settled", "settle", with_usage=True)
_RELEASE = _close_statement("released", "release", with_usage=False)

# Why nothing was written: read after a statement that returned no row.
_HOLD_FOR_REQUEST = _Statement(
    "SELECT id, kind, amount, charged, expires_at FROM holds "
    "WHERE account_id = :account_id AND request_id = :request_id")
_ACCOUNT_BALANCE = _Statement("SELECT balance FROM accounts WHERE id = :account_id")
_HOLD_STATE = _Statement(
    "SELECT account_id, kind, status, amount, charged, expires_at FROM holds WHERE id = :hold_id")

# Credit leases (storage/leases.py): only in batches, whose rows are locked up
# front, so each operation reads what it decides on and then writes.
_ACCOUNT_MONEY = _Statement("SELECT balance, held, unlimited FROM accounts WHERE id = :account_id")
_MOVE_CREDITS = _Statement("""
UPDATE accounts SET balance = balance + CAST(:to_balance AS BIGINT),
                    held = held + CAST(:to_held AS BIGINT)
 WHERE id = :account_id
RETURNING balance, held, unlimited
""")
_INSERT_LEASE = _Statement("""
INSERT INTO holds (id, account_id, request_id, kind, holder, amount, status, charged,
                   created_at, expires_at)
VALUES (:lease_id, :account_id, :request_id, 'lease', :holder, CAST(:amount AS BIGINT), 'open',
        0, CAST(:now AS TIMESTAMPTZ), CAST(:expires_at AS TIMESTAMPTZ))
""")
_INSERT_LEDGER = _Statement("""
INSERT INTO ledger (account_id, kind, amount, hold_id, created_at)
VALUES (:account_id, :kind, CAST(:amount AS BIGINT), :hold_id, CAST(:now AS TIMESTAMPTZ))
""")
_GROW_LEASE = _Statement(
    "UPDATE holds SET amount = amount + CAST(:amount AS BIGINT), "
    "expires_at = CAST(:expires_at AS TIMESTAMPTZ) WHERE id = :lease_id")
_SPEND_LEASE = _Statement(
    "UPDATE holds SET charged = charged + CAST(:amount AS BIGINT) WHERE id = :lease_id")
_RETURN_LEASE = _Statement(
    "UPDATE holds SET status = 'released', closed_at = CAST(:now AS TIMESTAMPTZ) "
    "WHERE id = :lease_id")
_USAGE_FOR_REQUEST = _Statement(
    "SELECT credits, late FROM usage_records "
    "WHERE account_id = :account_id AND request_id = :request_id")
# Spending caps (storage/key_caps.py), on rows under the batch's account locks.
_KEY_STATE = _Statement("""
SELECT k.account_id, k.daily_cap, k.total_cap, k.spent_total, k.spent_on_day, k.spend_day,
       (SELECT CAST(COALESCE(SUM(h.amount), 0) AS BIGINT) FROM holds h
         WHERE h.api_key_id = k.id AND h.status = 'open') AS held
  FROM api_keys k WHERE k.id = :key_id
""")
# The day only moves forward, so a replica whose clock lags cannot reset today's figure.
_ADD_KEY_SPEND = _Statement("""
UPDATE api_keys
   SET spent_total = spent_total + CAST(:amount AS BIGINT),
       spent_on_day = CASE WHEN spend_day >= CAST(:today AS DATE)
                           THEN spent_on_day + CAST(:amount AS BIGINT)
                           ELSE CAST(:amount AS BIGINT) END,
       spend_day = GREATEST(spend_day, CAST(:today AS DATE))
 WHERE id = :key_id AND account_id = :account_id
RETURNING daily_cap, total_cap
""")
_INSERT_CHARGE_USAGE = _Statement("""
INSERT INTO usage_records (account_id, hold_id, request_id, model_id, provider, images,
                           input_tokens, output_tokens, total_tokens, megapixels, credits,
                           end_user, api_key_id, late, created_at)
VALUES (:account_id, :hold_id, :request_id, :model_id, :provider, CAST(:images AS INTEGER),
        CAST(:input_tokens AS BIGINT), CAST(:output_tokens AS BIGINT),
        CAST(:total_tokens AS BIGINT), CAST(:megapixels AS DOUBLE PRECISION),
        CAST(:amount AS BIGINT), :end_user, :api_key_id, :late, CAST(:now AS TIMESTAMPTZ))
""")

# A batch's locks, taken up front in one global order (byte order of the ids, as
# the reaper sorts its accounts). NO KEY UPDATE is the lock the UPDATEs take
# anyway; it leaves foreign-key checks of other inserts alone.
_LOCK_HOLDS = _Statement(
    "SELECT account_id FROM holds WHERE id = ANY(CAST(:hold_ids AS TEXT[])) "
    'ORDER BY id COLLATE "C" FOR NO KEY UPDATE')
_LOCK_ACCOUNTS = _Statement(
    "SELECT id FROM accounts WHERE id = ANY(CAST(:account_ids AS TEXT[])) "
    'ORDER BY id COLLATE "C" FOR NO KEY UPDATE')


async def _fetch_row(conn: asyncpg.Connection, statement: _Statement,
                     params: dict[str, Any]) -> asyncpg.Record | None:
    return await conn.fetchrow(statement.sql, *statement.arguments(params))


async def _key_state(conn: asyncpg.Connection, key_id: str) -> KeyState | None:
    row = await _fetch_row(conn, _KEY_STATE, {"key_id": key_id})
    if row is None:
        return None
    return KeyState(row["account_id"], SpendingCaps(row["daily_cap"], row["total_cap"]),
                    row["spent_total"], row["spent_on_day"], row["spend_day"], row["held"])


async def _check_key(conn: asyncpg.Connection, op: ReserveOp, now: datetime) -> None:
    """Refuse a Reserve its key may not make (another account's, or over a cap)."""
    refusal = reserve_refusal(op.key_id, op.account_id, await _key_state(conn, op.key_id), op.amount,
                              now.date())
    if refusal is not None:
        raise refusal


async def _add_key_spend(conn: asyncpg.Connection, key_id: str, account_id: str, amount: int,
                         now: datetime) -> bool:
    """Count the charge toward the key's spend; whether the key has a cap."""
    if not key_id:
        return False
    row = await _fetch_row(conn, _ADD_KEY_SPEND, {
        "amount": amount, "today": now.date(), "key_id": key_id, "account_id": account_id})
    return row is not None and SpendingCaps(row["daily_cap"], row["total_cap"]).any


async def _place_hold(conn: asyncpg.Connection, op: ReserveOp, now: datetime,
                      expires_at: datetime) -> Hold:
    account_id, amount, request_id = op.account_id, op.amount, op.request_id
    if op.key_id:
        # A repeat finds its hold whatever the key's spend is now; the key's
        # rows cannot change meanwhile (its account is locked for the batch).
        existing = await _fetch_row(conn, _HOLD_FOR_REQUEST,
                                    {"account_id": account_id, "request_id": request_id})
        if existing is None:
            await _check_key(conn, op, now)
    hold_id = new_id("hold")
    placed = await _fetch_row(conn, _RESERVE, {
        "account_id": account_id, "amount": amount, "request_id": request_id,
        "hold_id": hold_id, "now": now, "expires_at": expires_at,
        "api_key_id": op.key_id or None})
    if placed is not None:
        return Hold(hold_id, account_id, request_id, amount, expires_at)
    return await _existing_hold_or_refusal(conn, account_id, amount, request_id)


async def _existing_hold_or_refusal(conn: asyncpg.Connection, account_id: str, amount: int,
                                    request_id: str) -> Hold:
    """After a Reserve that wrote nothing: the request id's hold, or why not."""
    existing = await _fetch_row(conn, _HOLD_FOR_REQUEST,
                                {"account_id": account_id, "request_id": request_id})
    if existing is not None:
        if existing["kind"] != REQUEST:
            raise request_id_taken(request_id, existing["kind"])
        return Hold(existing["id"], account_id, request_id, existing["amount"],
                    existing["expires_at"])
    account = await _fetch_row(conn, _ACCOUNT_BALANCE, {"account_id": account_id})
    if account is None:
        raise not_found("account", account_id)
    raise insufficient_credits(amount, account["balance"])


async def _close_hold(conn: asyncpg.Connection, hold_id: str, charged: int,
                      usage: Usage | None, now: datetime) -> Closed:
    """Settle the hold (with a usage record) when usage is given, else release it."""
    if usage is None:
        row = await _fetch_row(conn, _RELEASE, {"hold_id": hold_id, "charged": 0, "now": now})
    else:
        row = await _fetch_row(conn, _SETTLE, {
            "hold_id": hold_id, "charged": charged, "now": now,
            "model_id": usage.model_id, "provider": usage.provider, "images": usage.images,
            "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
            "total_tokens": usage.total_tokens, "megapixels": usage.megapixels,
            "end_user": usage.user, "today": now.date()})
    if row is not None:
        return Closed(charged=charged, balance=None if row["unlimited"] else row["balance"],
                      spendable=_spendable(row))
    state = await _fetch_row(conn, _HOLD_STATE, {"hold_id": hold_id})
    if state is None:
        raise not_found("hold", hold_id)
    if state["kind"] != REQUEST:
        raise lease_given_as_hold(hold_id)
    raise unclosable_hold(hold_id, state["status"], state["expires_at"], state["amount"],
                          now, charged)


async def _account_money(conn: asyncpg.Connection, account_id: str) -> asyncpg.Record:
    account = await _fetch_row(conn, _ACCOUNT_MONEY, {"account_id": account_id})
    if account is None:
        raise not_found("account", account_id)
    return account


async def _move_credits(conn: asyncpg.Connection, account_id: str, to_balance: int,
                        to_held: int) -> asyncpg.Record | None:
    """The account's balance, held and unlimited after the move; None when unknown."""
    return await _fetch_row(conn, _MOVE_CREDITS, {
        "account_id": account_id, "to_balance": to_balance, "to_held": to_held})


def _spendable(account: asyncpg.Record) -> int | None:
    return spendable(account["balance"], account["held"], account["unlimited"])


async def _write_ledger(conn: asyncpg.Connection, account_id: str, kind: str, amount: int,
                        hold_id: str | None, now: datetime) -> None:
    await conn.execute(_INSERT_LEDGER.sql, *_INSERT_LEDGER.arguments({
        "account_id": account_id, "kind": kind, "amount": amount, "hold_id": hold_id,
        "now": now}))


async def _lease_state(conn: asyncpg.Connection, lease_id: str) -> LeaseState | None:
    row = await _fetch_row(conn, _HOLD_STATE, {"hold_id": lease_id})
    if row is None:
        return None
    return LeaseState(row["account_id"], row["kind"], row["status"], row["amount"],
                      row["charged"] or 0, row["expires_at"])


async def _open_lease(conn: asyncpg.Connection, lease_id: str, now: datetime) -> LeaseState:
    state = await _lease_state(conn, lease_id)
    refusal = open_lease_refusal(lease_id, state, now)
    if refusal is not None:
        raise refusal
    assert state is not None
    return state


async def _acquire_lease(conn: asyncpg.Connection, op: AcquireLeaseOp, policy: LeasePolicy,
                         now: datetime) -> Lease:
    existing = await _fetch_row(conn, _HOLD_FOR_REQUEST,
                                {"account_id": op.account_id, "request_id": op.request_id})
    if existing is not None:
        if existing["kind"] != LEASE:
            raise request_id_taken(op.request_id, existing["kind"])
        account = await _account_money(conn, op.account_id)
        return Lease(existing["id"], op.account_id, existing["amount"], existing["charged"],
                     existing["expires_at"], _spendable(account))
    account = await _account_money(conn, op.account_id)
    size = lease_size(None if account["unlimited"] else account["balance"], policy.share,
                      op.minimum, op.want, op.unit)
    if size is None:
        raise lease_refused(op.minimum, account["balance"], policy.share)
    lease_id, expires_at = new_id("lease"), now + policy.ttl
    await conn.execute(_INSERT_LEASE.sql, *_INSERT_LEASE.arguments({
        "lease_id": lease_id, "account_id": op.account_id, "request_id": op.request_id,
        "holder": op.holder or None, "amount": size, "now": now, "expires_at": expires_at}))
    await _write_ledger(conn, op.account_id, "hold", -size, lease_id, now)
    after = await _move_credits(conn, op.account_id, -size, size)
    assert after is not None
    return Lease(lease_id, op.account_id, size, 0, expires_at, _spendable(after))


async def _extend_lease(conn: asyncpg.Connection, op: ExtendLeaseOp, policy: LeasePolicy,
                        now: datetime) -> Lease:
    lease = await _open_lease(conn, op.lease_id, now)
    account = await _account_money(conn, lease.account_id)
    size = lease_size(None if account["unlimited"] else account["balance"], policy.share,
                      op.minimum, op.want, op.unit)
    if size is None:
        raise lease_refused(op.minimum, account["balance"], policy.share)
    expires_at = now + policy.ttl
    await conn.execute(_GROW_LEASE.sql, *_GROW_LEASE.arguments({
        "amount": size, "expires_at": expires_at, "lease_id": op.lease_id}))
    if size:
        await _write_ledger(conn, lease.account_id, "hold", -size, op.lease_id, now)
    after = await _move_credits(conn, lease.account_id, -size, size)
    assert after is not None
    return Lease(op.lease_id, lease.account_id, lease.amount + size, lease.charged, expires_at,
                 _spendable(after))


async def _charge(conn: asyncpg.Connection, op: ChargeOp, now: datetime) -> Charged:
    first = await _fetch_row(conn, _USAGE_FOR_REQUEST,
                             {"account_id": op.account_id, "request_id": op.request_id})
    if first is not None:
        account = await _account_money(conn, op.account_id)
        return Charged(first["credits"], first["late"], _spendable(account), repeated=True)
    lease = await _lease_state(conn, op.lease_id) if op.lease_id else None
    from_lease = lease_takes_charge(lease, op.account_id, op.amount, now)
    if from_lease:
        await conn.execute(_SPEND_LEASE.sql, *_SPEND_LEASE.arguments(
            {"amount": op.amount, "lease_id": op.lease_id}))
        after = await _move_credits(conn, op.account_id, 0, -op.amount)
    else:
        after = await _move_credits(conn, op.account_id, -op.amount, 0)
    if after is None:
        raise not_found("account", op.account_id)
    late = charged_late(from_lease, op, unlimited=after["unlimited"])
    if not from_lease and op.amount:
        await _write_ledger(conn, op.account_id, "charge", -op.amount, None, now)
    key_capped = await _add_key_spend(conn, op.key_id, op.account_id, op.amount, now)
    usage = op.usage
    await conn.execute(_INSERT_CHARGE_USAGE.sql, *_INSERT_CHARGE_USAGE.arguments({
        "account_id": op.account_id, "hold_id": op.lease_id if from_lease else None,
        "request_id": op.request_id, "model_id": usage.model_id, "provider": usage.provider,
        "images": usage.images, "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens, "total_tokens": usage.total_tokens,
        "megapixels": usage.megapixels, "amount": op.amount, "end_user": usage.user,
        "api_key_id": op.key_id or None, "late": late, "now": now}))
    return Charged(op.amount, late, _spendable(after), repeated=False, key_capped=key_capped)


async def _return_lease(conn: asyncpg.Connection, op: ReturnLeaseOp,
                        now: datetime) -> LeaseReturned:
    lease = await _open_lease(conn, op.lease_id, now)
    await conn.execute(_RETURN_LEASE.sql, *_RETURN_LEASE.arguments(
        {"now": now, "lease_id": op.lease_id}))
    await _write_ledger(conn, lease.account_id, "release", lease.unspent, op.lease_id, now)
    after = await _move_credits(conn, lease.account_id, lease.unspent, -lease.unspent)
    assert after is not None
    return LeaseReturned(lease.unspent, _spendable(after))


async def _apply_operation(conn: asyncpg.Connection, op: LedgerOp, now: datetime,
                           expires_at: datetime, policy: LeasePolicy,
                           ) -> Hold | Closed | Lease | Charged | LeaseReturned:
    if isinstance(op, ReserveOp):
        return await _place_hold(conn, op, now, expires_at)
    if isinstance(op, ReleaseOp):
        return await _close_hold(conn, op.hold_id, 0, None, now)
    if isinstance(op, SettleOp):
        return await _close_hold(conn, op.hold_id, op.amount, op.usage, now)
    if isinstance(op, AcquireLeaseOp):
        return await _acquire_lease(conn, op, policy, now)
    if isinstance(op, ExtendLeaseOp):
        return await _extend_lease(conn, op, policy, now)
    if isinstance(op, ChargeOp):
        return await _charge(conn, op, now)
    return await _return_lease(conn, op, now)


def _rows_to_lock(op: LedgerOp) -> tuple[str | None, str | None]:
    """The hold (or lease) and the account an operation writes, as far as the
    operation names them; a hold's own account is found when it is locked."""
    if isinstance(op, ReserveOp | AcquireLeaseOp):
        return None, op.account_id
    if isinstance(op, ChargeOp):
        return op.lease_id or None, op.account_id
    if isinstance(op, SettleOp | ReleaseOp):
        return op.hold_id, None
    return op.lease_id, None


async def _lock_rows(conn: asyncpg.Connection, operations: Sequence[LedgerOp]) -> None:
    """Every hold the batch closes or spends, then every account it debits or credits."""
    named = [_rows_to_lock(op) for op in operations]
    account_ids = {account_id for _, account_id in named if account_id is not None}
    hold_ids = list({hold_id for hold_id, _ in named if hold_id is not None})
    if hold_ids:
        closing = await conn.fetch(_LOCK_HOLDS.sql, hold_ids)
        account_ids.update(row["account_id"] for row in closing)
    if account_ids:
        await conn.fetch(_LOCK_ACCOUNTS.sql, list(account_ids))


class PostgresMoneyStore:
    """The MoneyStore of a PostgreSQL database, on the asyncpg pool of `database`."""

    def __init__(self, database: Database, lease_policy: LeasePolicy) -> None:
        self._db = database
        self._lease_policy = lease_policy

    async def _fetch_row(self, statement: _Statement,
                         params: dict[str, Any]) -> asyncpg.Record | None:
        async with self._db.driver_connection() as conn:
            return await _fetch_row(conn, statement, params)

    async def identity_for_key_hash(self, secret_hash: str) -> Identity | None:
        row = await self._fetch_row(_AUTHENTICATE_KEY, {"secret_hash": secret_hash})
        if row is None:
            return None
        return Identity(account_id=row["account_id"], unlimited=row["unlimited"],
                        key_id=row["id"],
                        key_limits=LimitSetting(row["key_rpm"], row["key_concurrency"]),
                        account_limits=LimitSetting(row["account_rpm"], row["account_concurrency"]),
                        key_caps=SpendingCaps(row["daily_cap"], row["total_cap"]))

    async def identity_for_account(self, account_id: str) -> Identity | None:
        row = await self._fetch_row(_ACCOUNT_IDENTITY, {"account_id": account_id})
        if row is None:
            return None
        return Identity(account_id=account_id, unlimited=row["unlimited"],
                        account_limits=LimitSetting(row["requests_per_minute"],
                                                    row["max_concurrent_requests"]))

    async def apply_batch(self, operations: Sequence[LedgerOp], now: datetime,
                          expires_at: datetime) -> list[LedgerOutcome]:
        """The whole batch in one transaction on one connection; rolled back and
        run again when it lost a race (see MAX_BATCH_ATTEMPTS)."""
        attempt = 1
        while True:
            try:
                async with self._db.driver_connection() as conn, conn.transaction():
                    await _lock_rows(conn, operations)
                    outcomes: list[LedgerOutcome] = []
                    for op in operations:
                        try:
                            outcomes.append(await _apply_operation(
                                conn, op, now, expires_at, self._lease_policy))
                        except ServiceError as refusal:
                            outcomes.append(refusal)
                    return outcomes
            except _RETRYABLE as error:
                if attempt >= MAX_BATCH_ATTEMPTS:
                    raise
                log.info("ledger batch rolled back, running it again", extra={"fields": {
                    "attempt": attempt, "error": type(error).__name__,
                    "operations": len(operations)}})
                attempt += 1
