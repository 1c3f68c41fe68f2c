"""The money path on a SQLite file: Authenticate, and Ledger batches of Reserve,
Settle and Release and of the credit-lease operations (AcquireLease,
ExtendLease, Charge, ReturnLease), as short synchronous transactions
through the standard library driver (see sqlite_transactions.py for why, and for
how a busy file is waited on).

The rows written and the errors are those of the PostgreSQL money path (the
ledger entries are listed in money_store.py; the lease rules in leases.py).
Every write transaction starts
with BEGIN IMMEDIATE, so it holds the file's write lock from its first read:
what it reads (an existing hold, a balance) cannot change before it commits,
in this process or another one.

Times are stored as SQLAlchemy stores them for `UTCDateTime` on SQLite: naive
UTC text, `YYYY-MM-DD HH:MM:SS.ffffff`, fixed width so text order is time order.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, date, datetime

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
    OPEN,
    insufficient_credits,
    not_found,
    unclosable_hold,
)
from billing_svc.storage.sqlite_transactions import SqliteTransactions
from quantized_runtime.errors import ServiceError

_AUTHENTICATE_KEY = (
    "SELECT k.id, k.account_id, a.unlimited, k.requests_per_minute, k.max_concurrent_requests, "
    "a.requests_per_minute, a.max_concurrent_requests, k.daily_cap, k.total_cap FROM api_keys k "
    "JOIN accounts a ON a.id = k.account_id "
    "WHERE k.secret_hash = ? AND k.revoked_at IS NULL")
_ACCOUNT_IDENTITY = (
    "SELECT unlimited, requests_per_minute, max_concurrent_requests FROM accounts WHERE id = ?")
_ACCOUNT_BALANCE = "SELECT balance FROM accounts WHERE id = ?"
_HOLD_FOR_REQUEST = (
    "SELECT id, kind, amount, expires_at FROM holds WHERE account_id = ? AND request_id = ?")
_DEBIT_FOR_HOLD = (
    "UPDATE accounts SET balance = balance - ?1, held = held + ?1 "
    "WHERE id = ?2 AND (unlimited OR balance >= ?1) RETURNING unlimited")
_INSERT_HOLD = (
    "INSERT INTO holds (id, account_id, request_id, amount, status, created_at, expires_at, "
    f"api_key_id) VALUES (?, ?, ?, ?, '{OPEN}', ?, ?, ?)")
_INSERT_LEDGER = (
    "INSERT INTO ledger (account_id, kind, amount, hold_id, created_at) VALUES (?, ?, ?, ?, ?)")
# ?1 status, ?2 closed_at/now, ?3 charged, ?4 hold id. A request hold closes once,
# while open and unexpired, and never for more than it holds.
_CLOSE_HOLD = (
    "UPDATE holds SET status = ?1, closed_at = ?2, charged = ?3 "
    f"WHERE id = ?4 AND kind = '{REQUEST}' AND status = '{OPEN}' AND expires_at > ?2 "
    "AND amount >= ?3 RETURNING account_id, amount, request_id, api_key_id")
_HOLD_STATE = "SELECT kind, status, expires_at, amount FROM holds WHERE id = ?"
_CREDIT_ON_CLOSE = (
    "UPDATE accounts SET balance = balance + ?, held = held - ? WHERE id = ? "
    "RETURNING balance, held, unlimited")
_INSERT_USAGE = (
    "INSERT INTO usage_records (account_id, hold_id, request_id, model_id, provider, images, "
    "input_tokens, output_tokens, total_tokens, megapixels, credits, end_user, api_key_id, "
    "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")

# Credit leases (storage/leases.py). Each operation reads what it decides on
# first; under BEGIN IMMEDIATE that cannot change before the commit.
_ACCOUNT_MONEY = "SELECT balance, held, unlimited FROM accounts WHERE id = ?"
_MOVE_CREDITS = (
    "UPDATE accounts SET balance = balance + ?, held = held + ? WHERE id = ? "
    "RETURNING balance, held, unlimited")
_LEASE_STATE = (
    "SELECT account_id, kind, status, amount, charged, expires_at FROM holds WHERE id = ?")
_LEASE_FOR_REQUEST = (
    "SELECT id, kind, amount, charged, expires_at FROM holds "
    "WHERE account_id = ? AND request_id = ?")
_INSERT_LEASE = (
    "INSERT INTO holds (id, account_id, request_id, kind, holder, amount, status, charged, "
    f"created_at, expires_at) VALUES (?, ?, ?, '{LEASE}', ?, ?, '{OPEN}', 0, ?, ?)")
_GROW_LEASE = "UPDATE holds SET amount = amount + ?, expires_at = ? WHERE id = ?"
_SPEND_LEASE = "UPDATE holds SET charged = charged + ? WHERE id = ?"
_RETURN_LEASE = "UPDATE holds SET status = 'released', closed_at = ? WHERE id = ?"
_USAGE_FOR_REQUEST = (
    "SELECT credits, late FROM usage_records WHERE account_id = ? AND request_id = ?")
# Spending caps (storage/key_caps.py).
_KEY_STATE = (
    "SELECT k.account_id, k.daily_cap, k.total_cap, k.spent_total, k.spent_on_day, k.spend_day, "
    "(SELECT COALESCE(SUM(h.amount), 0) FROM holds h "
    f"WHERE h.api_key_id = k.id AND h.status = '{OPEN}') FROM api_keys k WHERE k.id = ?")
# ?1 amount, ?2 today (ISO text, as SQLAlchemy stores a Date), ?3 key, ?4 account. The
# day only moves forward, so a replica whose clock lags cannot reset today's figure.
_ADD_KEY_SPEND = (
    "UPDATE api_keys SET spent_total = spent_total + ?1, "
    "spent_on_day = CASE WHEN spend_day >= ?2 THEN spent_on_day + ?1 ELSE ?1 END, "
    "spend_day = MAX(COALESCE(spend_day, ?2), ?2) WHERE id = ?3 AND account_id = ?4 "
    "RETURNING daily_cap, total_cap")
_INSERT_CHARGE_USAGE = (
    "INSERT INTO usage_records (account_id, hold_id, request_id, model_id, provider, images, "
    "input_tokens, output_tokens, total_tokens, megapixels, credits, end_user, api_key_id, "
    "late, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


def stored_time(value: datetime) -> str:
    """An aware datetime in the text form `UTCDateTime` uses on SQLite."""
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def loaded_time(value: str) -> datetime:
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


# The work of one operation inside a write transaction. Each refuses (raises a
# ServiceError) only before its first write: the conditional UPDATE that starts
# its writes changed no row, so a refusal leaves the transaction as it found it
# and a batch can carry on with its next operation.

def _key_state(cursor: sqlite3.Cursor, key_id: str) -> KeyState | None:
    row = cursor.execute(_KEY_STATE, (key_id,)).fetchone()
    if row is None:
        return None
    account_id, daily, total, spent_total, spent_on_day, spend_day, held = row
    return KeyState(account_id, SpendingCaps(daily, total), spent_total, spent_on_day,
                    None if spend_day is None else date.fromisoformat(spend_day), held)


def _check_key(cursor: sqlite3.Cursor, op: ReserveOp, now: datetime) -> None:
    """Refuse a Reserve its key may not make (another account's, or over a cap)."""
    refusal = reserve_refusal(op.key_id, op.account_id, _key_state(cursor, op.key_id), op.amount, now.date())
    if refusal is not None:
        raise refusal


def _add_key_spend(cursor: sqlite3.Cursor, key_id: str | None, account_id: str, amount: int,
                   now: datetime) -> bool:
    """Count the charge toward the key's spend; whether the key has a cap."""
    if not key_id:
        return False
    row = cursor.execute(_ADD_KEY_SPEND, (amount, now.date().isoformat(), key_id,
                                          account_id)).fetchone()
    return row is not None and SpendingCaps(*row).any


def _place_hold(cursor: sqlite3.Cursor, op: ReserveOp, now: datetime,
                expires_at: datetime) -> Hold:
    """A new hold, or the existing one of this (account, request id)."""
    account_id, amount, request_id = op.account_id, op.amount, op.request_id
    # Idempotent: the write lock is held, so a hold found (or not) here stays so
    # until commit; in a batch it also finds a hold the batch placed earlier.
    existing = cursor.execute(_HOLD_FOR_REQUEST, (account_id, request_id)).fetchone()
    if existing is not None:
        existing_id, kind, existing_amount, existing_expiry = existing
        if kind != REQUEST:
            raise request_id_taken(request_id, kind)
        return Hold(existing_id, account_id, request_id, existing_amount,
                    loaded_time(existing_expiry))
    if op.key_id:
        _check_key(cursor, op, now)
    if cursor.execute(_DEBIT_FOR_HOLD, (amount, account_id)).fetchone() is None:
        balance = cursor.execute(_ACCOUNT_BALANCE, (account_id,)).fetchone()
        if balance is None:
            raise not_found("account", account_id)
        raise insufficient_credits(amount, balance[0])
    hold_id, created = new_id("hold"), stored_time(now)
    cursor.execute(_INSERT_HOLD, (hold_id, account_id, request_id, amount,
                                  created, stored_time(expires_at), op.key_id or None))
    cursor.execute(_INSERT_LEDGER, (account_id, "hold", -amount, hold_id, created))
    return Hold(hold_id, account_id, request_id, amount, expires_at)


def _close_hold(cursor: sqlite3.Cursor, hold_id: str, charged: int, usage: Usage | None,
                now: datetime) -> Closed:
    """Settle the hold (with a usage record) when usage is given, else release it."""
    status, ledger_kind = ("settled", "settle") if usage is not None else ("released", "release")
    closed_at = stored_time(now)
    closed = cursor.execute(_CLOSE_HOLD, (status, closed_at, charged, hold_id)).fetchone()
    if closed is None:
        state = cursor.execute(_HOLD_STATE, (hold_id,)).fetchone()
        if state is None:
            raise not_found("hold", hold_id)
        kind, hold_status, expiry, held = state
        if kind != REQUEST:
            raise lease_given_as_hold(hold_id)
        raise unclosable_hold(hold_id, hold_status, loaded_time(expiry), held, now, charged)
    account_id, held, request_id, key_id = closed
    refund = held - charged
    balance, held_after, unlimited = cursor.execute(
        _CREDIT_ON_CLOSE, (refund, held, account_id)).fetchone()
    cursor.execute(_INSERT_LEDGER, (account_id, ledger_kind, refund, hold_id, closed_at))
    if usage is not None:
        _add_key_spend(cursor, key_id, account_id, charged, now)
        cursor.execute(_INSERT_USAGE, (
            account_id, hold_id, request_id, usage.model_id, usage.provider, usage.images,
            usage.input_tokens, usage.output_tokens, usage.total_tokens, usage.megapixels,
            charged, usage.user, key_id, closed_at))
    return Closed(charged=charged, balance=None if unlimited else balance,
                  spendable=spendable(balance, held_after, bool(unlimited)))


def _account_money(cursor: sqlite3.Cursor, account_id: str) -> tuple[int, int, bool]:
    row = cursor.execute(_ACCOUNT_MONEY, (account_id,)).fetchone()
    if row is None:
        raise not_found("account", account_id)
    balance, held, unlimited = row
    return balance, held, bool(unlimited)


def _move_credits(cursor: sqlite3.Cursor, account_id: str, to_balance: int,
                  to_held: int) -> tuple[int, int, bool] | None:
    """The account's balance, held and unlimited after the move; None when unknown."""
    row = cursor.execute(_MOVE_CREDITS, (to_balance, to_held, account_id)).fetchone()
    return None if row is None else (row[0], row[1], bool(row[2]))


def _lease_state(cursor: sqlite3.Cursor, lease_id: str) -> LeaseState | None:
    row = cursor.execute(_LEASE_STATE, (lease_id,)).fetchone()
    if row is None:
        return None
    account_id, kind, status, amount, charged, expires_at = row
    return LeaseState(account_id, kind, status, amount, charged or 0, loaded_time(expires_at))


def _open_lease(cursor: sqlite3.Cursor, lease_id: str, now: datetime) -> LeaseState:
    state = _lease_state(cursor, lease_id)
    refusal = open_lease_refusal(lease_id, state, now)
    if refusal is not None:
        raise refusal
    assert state is not None
    return state


def _acquire_lease(cursor: sqlite3.Cursor, op: AcquireLeaseOp, policy: LeasePolicy,
                   now: datetime) -> Lease:
    existing = cursor.execute(_LEASE_FOR_REQUEST, (op.account_id, op.request_id)).fetchone()
    if existing is not None:
        lease_id, kind, amount, charged, expires_at = existing
        if kind != LEASE:
            raise request_id_taken(op.request_id, kind)
        balance, held, unlimited = _account_money(cursor, op.account_id)
        return Lease(lease_id, op.account_id, amount, charged, loaded_time(expires_at),
                     spendable(balance, held, unlimited))
    balance, held, unlimited = _account_money(cursor, op.account_id)
    size = lease_size(None if unlimited else balance, policy.share, op.minimum, op.want,
                      op.unit)
    if size is None:
        raise lease_refused(op.minimum, balance, policy.share)
    lease_id, created, expires_at = new_id("lease"), stored_time(now), now + policy.ttl
    cursor.execute(_INSERT_LEASE, (lease_id, op.account_id, op.request_id, op.holder or None,
                                   size, created, stored_time(expires_at)))
    cursor.execute(_INSERT_LEDGER, (op.account_id, "hold", -size, lease_id, created))
    after = _move_credits(cursor, op.account_id, -size, size)
    assert after is not None
    return Lease(lease_id, op.account_id, size, 0, expires_at, spendable(*after))


def _extend_lease(cursor: sqlite3.Cursor, op: ExtendLeaseOp, policy: LeasePolicy,
                  now: datetime) -> Lease:
    lease = _open_lease(cursor, op.lease_id, now)
    balance, held, unlimited = _account_money(cursor, lease.account_id)
    size = lease_size(None if unlimited else balance, policy.share, op.minimum, op.want,
                      op.unit)
    if size is None:
        raise lease_refused(op.minimum, balance, policy.share)
    expires_at = now + policy.ttl
    cursor.execute(_GROW_LEASE, (size, stored_time(expires_at), op.lease_id))
    if size:
        cursor.execute(_INSERT_LEDGER, (lease.account_id, "hold", -size, op.lease_id,
                                        stored_time(now)))
    after = _move_credits(cursor, lease.account_id, -size, size)
    assert after is not None
    return Lease(op.lease_id, lease.account_id, lease.amount + size, lease.charged,
                 expires_at, spendable(*after))


def _charge(cursor: sqlite3.Cursor, op: ChargeOp, now: datetime) -> Charged:
    first = cursor.execute(_USAGE_FOR_REQUEST, (op.account_id, op.request_id)).fetchone()
    if first is not None:
        return Charged(first[0], bool(first[1]),
                       spendable(*_account_money(cursor, op.account_id)), repeated=True)
    lease = _lease_state(cursor, op.lease_id) if op.lease_id else None
    from_lease = lease_takes_charge(lease, op.account_id, op.amount, now)
    if from_lease:
        cursor.execute(_SPEND_LEASE, (op.amount, op.lease_id))
        after = _move_credits(cursor, op.account_id, 0, -op.amount)
    else:
        after = _move_credits(cursor, op.account_id, -op.amount, 0)
    if after is None:
        raise not_found("account", op.account_id)
    created = stored_time(now)
    late = charged_late(from_lease, op, unlimited=after[2])
    if not from_lease and op.amount:
        cursor.execute(_INSERT_LEDGER, (op.account_id, "charge", -op.amount, None, created))
    key_capped = _add_key_spend(cursor, op.key_id, op.account_id, op.amount, now)
    usage = op.usage
    cursor.execute(_INSERT_CHARGE_USAGE, (
        op.account_id, op.lease_id if from_lease else None, op.request_id, usage.model_id,
        usage.provider, usage.images, usage.input_tokens, usage.output_tokens,
        usage.total_tokens, usage.megapixels, op.amount, usage.user, op.key_id or None, late,
        created))
    return Charged(op.amount, late, spendable(*after), repeated=False, key_capped=key_capped)


def _return_lease(cursor: sqlite3.Cursor, op: ReturnLeaseOp, now: datetime) -> LeaseReturned:
    lease = _open_lease(cursor, op.lease_id, now)
    closed_at = stored_time(now)
    cursor.execute(_RETURN_LEASE, (closed_at, op.lease_id))
    cursor.execute(_INSERT_LEDGER, (lease.account_id, "release", lease.unspent, op.lease_id,
                                    closed_at))
    after = _move_credits(cursor, lease.account_id, lease.unspent, -lease.unspent)
    assert after is not None
    return LeaseReturned(lease.unspent, spendable(*after))


def _apply_operation(cursor: sqlite3.Cursor, op: LedgerOp, now: datetime,
                     expires_at: datetime, policy: LeasePolicy,
                     ) -> Hold | Closed | Lease | Charged | LeaseReturned:
    if isinstance(op, ReserveOp):
        return _place_hold(cursor, op, now, expires_at)
    if isinstance(op, ReleaseOp):
        return _close_hold(cursor, op.hold_id, 0, None, now)
    if isinstance(op, SettleOp):
        return _close_hold(cursor, op.hold_id, op.amount, op.usage, now)
    if isinstance(op, AcquireLeaseOp):
        return _acquire_lease(cursor, op, policy, now)
    if isinstance(op, ExtendLeaseOp):
        return _extend_lease(cursor, op, policy, now)
    if isinstance(op, ChargeOp):
        return _charge(cursor, op, now)
    return _return_lease(cursor, op, now)


class SqliteMoneyStore:
    """The MoneyStore of a SQLite file, on the loop-side connection."""

    def __init__(self, transactions: SqliteTransactions, lease_policy: LeasePolicy) -> None:
        self._sqlite = transactions
        self._lease_policy = lease_policy

    async def identity_for_key_hash(self, secret_hash: str) -> Identity | None:
        row = await self._sqlite.read(
            lambda cursor: cursor.execute(_AUTHENTICATE_KEY, (secret_hash,)).fetchone())
        if row is None:
            return None
        (key_id, account_id, unlimited, key_rpm, key_concurrency, account_rpm, account_concurrency,
         daily_cap, total_cap) = row
        return Identity(account_id=account_id, unlimited=bool(unlimited), key_id=key_id,
                        key_limits=LimitSetting(key_rpm, key_concurrency),
                        account_limits=LimitSetting(account_rpm, account_concurrency),
                        key_caps=SpendingCaps(daily_cap, total_cap))

    async def identity_for_account(self, account_id: str) -> Identity | None:
        row = await self._sqlite.read(
            lambda cursor: cursor.execute(_ACCOUNT_IDENTITY, (account_id,)).fetchone())
        if row is None:
            return None
        unlimited, rpm, concurrency = row
        return Identity(account_id=account_id, unlimited=bool(unlimited),
                        account_limits=LimitSetting(rpm, concurrency))

    async def apply_batch(self, operations: Sequence[LedgerOp], now: datetime,
                          expires_at: datetime) -> list[LedgerOutcome]:
        """The whole batch in one BEGIN IMMEDIATE ... COMMIT. A refusal is recorded
        and the batch goes on (the refused operation wrote nothing); any other
        exception rolls the whole batch back and is raised."""

        def apply(cursor: sqlite3.Cursor) -> list[LedgerOutcome]:
            connection = cursor.connection
            outcomes: list[LedgerOutcome] = []
            for op in operations:
                changes_before = connection.total_changes
                try:
                    outcomes.append(_apply_operation(cursor, op, now, expires_at,
                                                     self._lease_policy))
                except ServiceError as refusal:
                    if connection.total_changes != changes_before:
                        # Committing would keep half an operation: fail the batch.
                        raise RuntimeError(
                            f"a refused {type(op).__name__} wrote rows") from refusal
                    outcomes.append(refusal)
            return outcomes

        return await self._sqlite.write(apply)
