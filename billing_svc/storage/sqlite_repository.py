"""The request path on a SQLite file: Authenticate, Reserve, Settle and Release
as short synchronous transactions through the standard library driver (see
sqlite_transactions.py for why, and for how a busy file is waited on).

The statements, the rows written and the errors are those of the generic path
(repository.py); only the plumbing is leaner. Every write transaction starts
with BEGIN IMMEDIATE, so it holds the file's write lock from its first read:
what it reads (an existing hold, a balance) cannot change before it commits,
in this process or another one.

Times are stored as SQLAlchemy stores them for `UTCDateTime` on SQLite: naive
UTC text, `YYYY-MM-DD HH:MM:SS.ffffff`, fixed width so text order is time order.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime

from billing_svc.domain import Closed, Hold, Identity, Usage, new_id
from billing_svc.storage.engine import Database
from billing_svc.storage.repository import (
    OPEN,
    BillingRepository,
    insufficient_credits,
    not_found,
    unclosable_hold,
)
from billing_svc.storage.sqlite_transactions import SqliteTransactions

_AUTHENTICATE_KEY = (
    "SELECT k.id, k.account_id, a.unlimited FROM api_keys k "
    "JOIN accounts a ON a.id = k.account_id "
    "WHERE k.secret_hash = ? AND k.revoked_at IS NULL")
_ACCOUNT_UNLIMITED = "SELECT unlimited FROM accounts WHERE id = ?"
_ACCOUNT_BALANCE = "SELECT balance FROM accounts WHERE id = ?"
_HOLD_FOR_REQUEST = (
    "SELECT id, amount, expires_at FROM holds WHERE account_id = ? AND request_id = ?")
_DEBIT_FOR_HOLD = (
    "UPDATE accounts SET balance = balance - ?1, held = held + ?1 "
    "WHERE id = ?2 AND (unlimited OR balance >= ?1) RETURNING unlimited")
_INSERT_HOLD = (
    "INSERT INTO holds (id, account_id, request_id, amount, status, created_at, expires_at) "
    f"VALUES (?, ?, ?, ?, '{OPEN}', ?, ?)")
_INSERT_LEDGER = (
    "INSERT INTO ledger (account_id, kind, amount, hold_id, created_at) VALUES (?, ?, ?, ?, ?)")
# ?1 status, ?2 closed_at/now, ?3 charged, ?4 hold id. A hold closes once, while
# open and unexpired, and never for more than it holds.
_CLOSE_HOLD = (
    "UPDATE holds SET status = ?1, closed_at = ?2, charged = ?3 "
    f"WHERE id = ?4 AND status = '{OPEN}' AND expires_at > ?2 AND amount >= ?3 "
    "RETURNING account_id, amount, request_id")
_HOLD_STATE = "SELECT status, expires_at, amount FROM holds WHERE id = ?"
_CREDIT_ON_CLOSE = (
    "UPDATE accounts SET balance = balance + ?, held = held - ? WHERE id = ? "
    "RETURNING balance, unlimited")
_INSERT_USAGE = (
    "INSERT INTO usage_records (account_id, hold_id, request_id, model_id, provider, images, "
    "input_tokens, output_tokens, total_tokens, megapixels, credits, end_user, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")

# Writes the usage row of a settled hold: (cursor, account_id, request_id, closed_at).
_UsageWriter = Callable[[sqlite3.Cursor, str, str, str], None]


def stored_time(value: datetime) -> str:
    """An aware datetime in the text form `UTCDateTime` uses on SQLite."""
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def loaded_time(value: str) -> datetime:
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


class SqliteBillingRepository(BillingRepository):
    """The generic repository, with the request path on the loop-side connection."""

    def __init__(self, database: Database, transactions: SqliteTransactions) -> None:
        super().__init__(database)
        self._sqlite = transactions

    async def identity_for_key_hash(self, secret_hash: str) -> Identity | None:
        row = await self._sqlite.read(
            lambda cursor: cursor.execute(_AUTHENTICATE_KEY, (secret_hash,)).fetchone())
        if row is None:
            return None
        key_id, account_id, unlimited = row
        return Identity(account_id=account_id, unlimited=bool(unlimited), key_id=key_id)

    async def identity_for_account(self, account_id: str) -> Identity | None:
        row = await self._sqlite.read(
            lambda cursor: cursor.execute(_ACCOUNT_UNLIMITED, (account_id,)).fetchone())
        if row is None:
            return None
        return Identity(account_id=account_id, unlimited=bool(row[0]))

    async def reserve(self, account_id: str, amount: int, request_id: str,
                      now: datetime, expires_at: datetime) -> Hold:
        hold_id = new_id("hold")
        created, expires = stored_time(now), stored_time(expires_at)

        def place(cursor: sqlite3.Cursor) -> Hold:
            # Idempotent: the write lock is held, so a hold found (or not) here
            # stays so until commit.
            existing = cursor.execute(_HOLD_FOR_REQUEST, (account_id, request_id)).fetchone()
            if existing is not None:
                existing_id, existing_amount, existing_expiry = existing
                return Hold(existing_id, account_id, request_id, existing_amount,
                            loaded_time(existing_expiry))
            if cursor.execute(_DEBIT_FOR_HOLD, (amount, account_id)).fetchone() is None:
                balance = cursor.execute(_ACCOUNT_BALANCE, (account_id,)).fetchone()
                if balance is None:
                    raise not_found("account", account_id)
                raise insufficient_credits(amount, balance[0])
            cursor.execute(_INSERT_HOLD, (hold_id, account_id, request_id, amount,
                                          created, expires))
            cursor.execute(_INSERT_LEDGER, (account_id, "hold", -amount, hold_id, created))
            return Hold(hold_id, account_id, request_id, amount, expires_at)

        return await self._sqlite.write(place)

    async def settle(self, hold_id: str, charged: int, usage: Usage, now: datetime) -> Closed:
        def usage_row(cursor: sqlite3.Cursor, account_id: str, request_id: str,
                      closed_at: str) -> None:
            cursor.execute(_INSERT_USAGE, (
                account_id, hold_id, request_id, usage.model_id, usage.provider, usage.images,
                usage.input_tokens, usage.output_tokens, usage.total_tokens, usage.megapixels,
                charged, usage.user, closed_at))

        return await self._close(hold_id, "settled", "settle", charged, now, usage_row)

    async def release(self, hold_id: str, now: datetime) -> Closed:
        return await self._close(hold_id, "released", "release", 0, now, None)

    async def _close(self, hold_id: str, status: str, ledger_kind: str, charged: int,
                     now: datetime, record_usage: _UsageWriter | None) -> Closed:
        closed_at = stored_time(now)

        def close(cursor: sqlite3.Cursor) -> Closed:
            closed = cursor.execute(_CLOSE_HOLD, (status, closed_at, charged, hold_id)).fetchone()
            if closed is None:
                state = cursor.execute(_HOLD_STATE, (hold_id,)).fetchone()
                if state is None:
                    raise not_found("hold", hold_id)
                hold_status, expiry, held = state
                raise unclosable_hold(hold_id, hold_status, loaded_time(expiry), held, now,
                                      charged)
            account_id, held, request_id = closed
            refund = held - charged
            balance, unlimited = cursor.execute(
                _CREDIT_ON_CLOSE, (refund, held, account_id)).fetchone()
            cursor.execute(_INSERT_LEDGER, (account_id, ledger_kind, refund, hold_id, closed_at))
            if record_usage is not None:
                record_usage(cursor, account_id, request_id, closed_at)
            return Closed(charged=charged, balance=None if unlimited else balance)

        return await self._sqlite.write(close)
