"""Usage reports from usage_records: totals per bucket, summed by the database,
a page at a time. Not on the request path, so one SQLAlchemy implementation
serves both databases; only the UTC day of a timestamp is spelt per dialect.

A page asks for one bucket more than it returns, to know whether more follow;
the next page starts after the last bucket key returned (billing_svc/usage.py).
The reads use the (account_id, created_at) index.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from typing import Any

from sqlalchemy import BigInteger, Float, String, cast, func, literal_column, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from billing_svc.domain import SpendingCaps
from billing_svc.storage.engine import Database
from billing_svc.storage.key_caps import KeyState
from billing_svc.storage.leases import spendable
from billing_svc.storage.money_store import not_found
from billing_svc.storage.schema import accounts, api_keys, usage_records
from billing_svc.usage import Grouping, UsagePage, UsageTotals, UsageWindow

_BUCKET = "bucket"


def _bucket_key(grouping: Grouping, dialect: str) -> ColumnElement[str]:
    """The bucket a record falls in, as text whose byte order is the buckets' order
    (SQLite compares text bytewise; PostgreSQL is told to, whatever its locale)."""
    created_at = usage_records.c.created_at
    if dialect == "sqlite":
        if grouping is Grouping.DAY:
            # Stored as naive UTC text, `YYYY-MM-DD HH:MM:SS.ffffff` (schema.UTCDateTime).
            return func.substr(created_at, 1, 10, type_=String)
        return _group_column(grouping)
    if grouping is Grouping.DAY:
        return func.to_char(func.timezone(literal_column("'UTC'"), created_at),
                            literal_column("'YYYY-MM-DD'"), type_=String)
    return _group_column(grouping).collate("C")


def _group_column(grouping: Grouping) -> ColumnElement[str]:
    if grouping is Grouping.MODEL:
        return usage_records.c.model_id
    return func.coalesce(usage_records.c.api_key_id, literal_column("''"), type_=String)


def _total(column: Any) -> ColumnElement[int]:
    # PostgreSQL sums a BIGINT as NUMERIC; the totals are whole numbers.
    return cast(func.coalesce(func.sum(column), 0), BigInteger)


def _totals(row: Row[Any]) -> UsageTotals:
    return UsageTotals(key=row.bucket, requests=row.requests, images=row.images,
                       input_tokens=row.input_tokens, output_tokens=row.output_tokens,
                       total_tokens=row.total_tokens,
                       # Summed as floats: rounded to the precision the upstreams report.
                       megapixels=round(float(row.megapixels), 6),
                       credits=row.credits)


async def _with_key_details(conn: AsyncConnection, buckets: list[UsageTotals],
                            today: date) -> list[UsageTotals]:
    """Key buckets with what is shown of their key: its prefix (never the secret),
    its spending caps and its spend against them."""
    key_ids = [bucket.key for bucket in buckets if bucket.key]
    keys = api_keys.c
    rows = (await conn.execute(
        select(keys.id, keys.account_id, keys.prefix, keys.daily_cap, keys.total_cap, keys.spent_total,
               keys.spent_on_day, keys.spend_day)
        .where(keys.id.in_(key_ids)))).all() if key_ids else []
    details = {row.id: _key_details(row, today) for row in rows}
    return [replace(bucket, **details.get(bucket.key, {})) for bucket in buckets]


def _key_details(row: Row[Any], today: date) -> dict[str, Any]:
    state = KeyState(row.account_id, SpendingCaps(row.daily_cap, row.total_cap), row.spent_total,
                     row.spent_on_day, row.spend_day, held=0)
    return {"key_prefix": row.prefix, "caps": state.caps, "spend": state.spend(today)}


class UsageStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def usage_page(self, account_id: str, window: UsageWindow, today: date) -> UsagePage:
        """One page of the account's buckets in `window`, with its balance now;
        NOT_FOUND for an unknown account."""
        key = _bucket_key(window.grouping, self._db.dialect)
        records = usage_records.c
        statement = (
            select(key.label(_BUCKET),
                   cast(func.count(), BigInteger).label("requests"),
                   _total(records.images).label("images"),
                   _total(records.input_tokens).label("input_tokens"),
                   _total(records.output_tokens).label("output_tokens"),
                   _total(records.total_tokens).label("total_tokens"),
                   cast(func.coalesce(func.sum(records.megapixels), 0.0), Float).label("megapixels"),
                   _total(records.credits).label("credits"))
            .where(records.account_id == account_id,
                   records.created_at >= window.start, records.created_at < window.end)
            # By the output column's name: PostgreSQL would not match the day's
            # expression in GROUP BY to the one in the select list.
            .group_by(literal_column(_BUCKET))
            .order_by(literal_column(_BUCKET))
            .limit(window.limit + 1))
        if window.after is not None:
            statement = statement.where(key > window.after)
        async with self._db.read() as conn:
            account = (await conn.execute(
                select(accounts.c.balance, accounts.c.held, accounts.c.unlimited)
                .where(accounts.c.id == account_id))).first()
            if account is None:
                raise not_found("account", account_id)
            rows = (await conn.execute(statement)).all()
            buckets = [_totals(row) for row in rows[:window.limit]]
            if window.grouping is Grouping.KEY:
                buckets = await _with_key_details(conn, buckets, today)
        unlimited = bool(account.unlimited)
        return UsagePage(buckets=buckets, has_more=len(rows) > window.limit,
                         credits_remaining=spendable(account.balance, account.held, unlimited),
                         unlimited=unlimited)
