"""The request path on PostgreSQL: Authenticate, Reserve, Settle and Release each
as ONE statement sent without BEGIN/COMMIT (a statement is atomic by itself), so
each costs one round trip instead of four to six. Data-modifying CTEs chain the
steps; the same ledger rows as the generic path are written (see repository.py).
The statements go straight to asyncpg (prepared once per connection); the
explanation of a refusal, off the hot path, goes through SQLAlchemy.

Concurrency is the same as in the generic path: the conditional UPDATE of the
account row takes its row lock, and a waiting writer re-checks the balance
against the committed row before it debits.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import asyncpg

from billing_svc.domain import Closed, Hold, Identity, Usage, new_id
from billing_svc.storage.repository import BillingRepository



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
    "SELECT k.id, k.account_id, a.unlimited FROM api_keys k "
    "JOIN accounts a ON a.id = k.account_id "
    "WHERE k.secret_hash = :secret_hash AND k.revoked_at IS NULL")

_ACCOUNT_UNLIMITED = _Statement("SELECT unlimited FROM accounts WHERE id = :account_id")

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
    INSERT INTO holds (id, account_id, request_id, amount, status, created_at, expires_at)
    SELECT :hold_id, id, :request_id, CAST(:amount AS BIGINT), 'open',
           CAST(:now AS TIMESTAMPTZ), CAST(:expires_at AS TIMESTAMPTZ)
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
                               credits, end_user, created_at)
    SELECT account_id, id, request_id, CAST(:model_id AS VARCHAR), CAST(:provider AS VARCHAR),
           CAST(:images AS INTEGER), CAST(:input_tokens AS BIGINT),
           CAST(:output_tokens AS BIGINT), CAST(:total_tokens AS BIGINT),
           CAST(:megapixels AS DOUBLE PRECISION), CAST(:charged AS BIGINT),
           CAST(:end_user AS VARCHAR), CAST(:now AS TIMESTAMPTZ)
      FROM closed
)""" if with_usage else ""
    return _Statement(f"""
WITH closed AS (
    UPDATE holds
       SET status = '{status}', charged = CAST(:charged AS BIGINT),
           closed_at = CAST(:now AS TIMESTAMPTZ)
     WHERE id = :hold_id AND status = 'open' AND expires_at > CAST(:now AS TIMESTAMPTZ)
           {charge_condition}
    RETURNING id, account_id, amount, request_id
), credited AS (
    UPDATE accounts a
       SET balance = a.balance + (c.amount - CAST(:charged AS BIGINT)),
           held = a.held - c.amount
      FROM closed c
     WHERE a.id = c.account_id
    RETURNING a.balance, a.unlimited
), entry AS (
    INSERT INTO ledger (account_id, kind, amount, hold_id, created_at)
    SELECT account_id, '{ledger_kind}', amount - CAST(:charged AS BIGINT), id,
           CAST(:now AS TIMESTAMPTZ)
      FROM closed
){usage_insert}
SELECT balance, unlimited FROM credited
""")


_SETTLE = _close_statement("settled", "settle", with_usage=True)
_RELEASE = _close_statement("released", "release", with_usage=False)


class PostgresBillingRepository(BillingRepository):
    async def _fetch_row(self, statement: _Statement,
                         params: dict[str, Any]) -> asyncpg.Record | None:
        async with self._db.driver_connection() as conn:
            return await conn.fetchrow(statement.sql, *statement.arguments(params))

    async def identity_for_key_hash(self, secret_hash: str) -> Identity | None:
        row = await self._fetch_row(_AUTHENTICATE_KEY, {"secret_hash": secret_hash})
        if row is None:
            return None
        return Identity(account_id=row["account_id"], unlimited=row["unlimited"],
                        key_id=row["id"])

    async def identity_for_account(self, account_id: str) -> Identity | None:
        row = await self._fetch_row(_ACCOUNT_UNLIMITED, {"account_id": account_id})
        if row is None:
            return None
        return Identity(account_id=account_id, unlimited=row["unlimited"])

    async def reserve(self, account_id: str, amount: int, request_id: str,
                      now: datetime, expires_at: datetime) -> Hold:
        hold_id = new_id("hold")
        try:
            placed = await self._fetch_row(_RESERVE, {
                "account_id": account_id, "amount": amount, "request_id": request_id,
                "hold_id": hold_id, "now": now, "expires_at": expires_at})
        except asyncpg.UniqueViolationError:
            placed = None
        if placed is not None:
            return Hold(hold_id, account_id, request_id, amount, expires_at)
        # Nothing was written: explain why (or find the retried request's hold).
        async with self._db.read() as conn:
            existing = await self._hold_for_request(conn, account_id, request_id)
            if existing is not None:
                return existing
            raise await self._cannot_debit(conn, account_id, amount)

    async def settle(self, hold_id: str, charged: int, usage: Usage, now: datetime) -> Closed:
        params = {"hold_id": hold_id, "charged": charged, "now": now,
                  "model_id": usage.model_id, "provider": usage.provider,
                  "images": usage.images, "input_tokens": usage.input_tokens,
                  "output_tokens": usage.output_tokens, "total_tokens": usage.total_tokens,
                  "megapixels": usage.megapixels, "end_user": usage.user}
        return await self._close(_SETTLE, params, hold_id, charged, now)

    async def release(self, hold_id: str, now: datetime) -> Closed:
        return await self._close(_RELEASE, {"hold_id": hold_id, "charged": 0, "now": now},
                                 hold_id, 0, now)

    async def _close(self, statement: _Statement, params: dict[str, Any], hold_id: str,
                     charged: int, now: datetime) -> Closed:
        row = await self._fetch_row(statement, params)
        if row is None:
            async with self._db.read() as conn:
                raise await self._unclosable(conn, hold_id, now, charged)
        return Closed(charged=charged, balance=None if row["unlimited"] else row["balance"])
