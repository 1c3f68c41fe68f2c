"""Usage reports (issue 19): every path that writes usage records the API key,
and GetUsage / GetAccountUsage total the records per UTC day, model and key,
page by page, for one account only, with the balance; a bad query is refused
naming its field. On SQLite and PostgreSQL, through billing's real gRPC server."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import create_async_engine

from billing_svc.storage.schema import usage_records
from quantized.billing.v1 import billing_pb2 as pb
from quantized.common.v1 import images_pb2, usage_pb2
from quantized_runtime.clock import utc_now

from .conftest import BillingClient, expect_error

PRICE = 1_000
DAY = usage_pb2.USAGE_GROUPING_DAY
MODEL = usage_pb2.USAGE_GROUPING_MODEL
KEY = usage_pb2.USAGE_GROUPING_KEY


def _usage(model: str, images: int = 1, **measured: Any) -> pb.UsageRecord:
    return pb.UsageRecord(model_id=model, provider="openai", images=images,
                          usage=images_pb2.UpstreamUsage(**measured))


async def _charge(client: BillingClient, account_id: str, request_id: str, usage: pb.UsageRecord,
                  key_id: str, lease_id: str = "", amount: int = PRICE) -> pb.ChargeResponse:
    return await client.ledger_operation(pb.LedgerOperation(charge=pb.ChargeRequest(
        account_id=account_id, request_id=request_id, lease_id=lease_id, amount_micro_credits=amount,
        usage=usage, key_id=key_id)))


async def _stored_key_ids(database_url: str, account_id: str) -> dict[str, str | None]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(select(usage_records.c.request_id, usage_records.c.api_key_id)
                                      .where(usage_records.c.account_id == account_id))
            return {row.request_id: row.api_key_id for row in rows}
    finally:
        await engine.dispose()


async def _seed(database_url: str, account_id: str, rows: list[dict[str, Any]]) -> None:
    """Usage records of past days, written as Settle and Charge write them (the
    service's clock is now; these place records either side of a UTC midnight)."""
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(usage_records.insert(), [
                {"account_id": account_id, "hold_id": None, "provider": "openai", "end_user": None,
                 "input_tokens": None, "output_tokens": None, "total_tokens": None, "megapixels": None,
                 **row} for row in rows])
    finally:
        await engine.dispose()


async def _report(client: BillingClient, account_id: str, *, admin: bool = False,
                  **query: Any) -> usage_pb2.UsageReport:
    request_query = usage_pb2.UsageQuery(**query)
    if admin:
        return (await client.admin_call("GetAccountUsage", pb.GetAccountUsageRequest(
            account_id=account_id, query=request_query))).report
    return (await client.call(client.billing.GetUsage, pb.GetUsageRequest(
        account_id=account_id, query=request_query))).report


async def test_every_path_that_writes_usage_records_the_api_key(client: BillingClient, database_url) -> None:
    created = await client.create_account(credits=100 * PRICE)
    account_id, key_id = created.account.account_id, created.key.key_id
    hold = await client.ledger_operation(pb.LedgerOperation(reserve=pb.ReserveRequest(
        account_id=account_id, amount_micro_credits=PRICE, request_id="req-settled", key_id=key_id)))
    await client.settle(hold.hold_id, PRICE, _usage("dall-e-2"))
    lease = (await client.ledger_operation(pb.LedgerOperation(acquire_lease=pb.AcquireLeaseRequest(
        account_id=account_id, holder="edge-1", request_id="lease-1", min_micro_credits=PRICE,
        want_micro_credits=4 * PRICE, unit_micro_credits=PRICE)))).lease_id
    from_lease = await _charge(client, account_id, "req-leased", _usage("dall-e-2"), key_id, lease)
    late = await _charge(client, account_id, "req-late", _usage("dall-e-2"), key_id, "lease_gone")
    await _charge(client, account_id, "req-jwt", _usage("dall-e-2"), "")
    assert not from_lease.late and late.late
    assert await _stored_key_ids(database_url, account_id) == {
        "req-settled": key_id, "req-leased": key_id, "req-late": key_id, "req-jwt": None}


async def test_buckets_total_the_records_by_utc_day_model_and_key(client: BillingClient, database_url) -> None:
    created = await client.create_account(credits=100 * PRICE)
    account_id, key_id = created.account.account_id, created.key.key_id
    second_key = (await client.admin_call("CreateApiKey", pb.CreateApiKeyRequest(account_id=account_id))).key
    midnight = datetime(2026, 11, 2, tzinfo=UTC)
    await _seed(database_url, account_id, [
        {"request_id": "a", "model_id": "gpt-image-1", "images": 1, "input_tokens": 10, "output_tokens": 100,
         "total_tokens": 110, "credits": 300, "api_key_id": key_id,
         "created_at": midnight - timedelta(microseconds=1)},
        {"request_id": "b", "model_id": "sandbox-image-1", "images": 2, "megapixels": 0.5, "credits": 200,
         "api_key_id": second_key.key_id, "created_at": midnight},
        {"request_id": "c", "model_id": "gpt-image-1", "images": 0, "credits": 0, "api_key_id": None,
         "created_at": midnight + timedelta(hours=23, minutes=59)},
        # Outside the range asked for below.
        {"request_id": "d", "model_id": "gpt-image-1", "images": 5, "credits": 5000, "api_key_id": key_id,
         "created_at": midnight + timedelta(days=1)},
    ])
    window = {"start": "2026-11-01", "end": "2026-11-03T00:00:00+00:00"}

    by_day = await _report(client, account_id, group_by=DAY, **window)
    assert [(b.day, b.requests, b.images, b.input_tokens, b.output_tokens, b.total_tokens, b.megapixels,
             b.credits_used) for b in by_day.buckets] == [
        ("2026-11-01", 1, 1, 10, 100, 110, 0.0, 300),
        ("2026-11-02", 2, 2, 0, 0, 0, 0.5, 200)]
    assert (by_day.start, by_day.end) == ("2026-11-01T00:00:00Z", "2026-11-03T00:00:00Z")
    assert by_day.credits_remaining == 100 * PRICE and not by_day.unlimited and not by_day.has_more

    by_model = await _report(client, account_id, group_by=MODEL, **window)
    assert [(b.model, b.requests, b.credits_used) for b in by_model.buckets] == [
        ("gpt-image-1", 2, 300), ("sandbox-image-1", 1, 200)]

    by_key = await _report(client, account_id, group_by=KEY, **window)
    assert sorted((b.key_id, b.key_prefix, b.requests, b.credits_used) for b in by_key.buckets) == sorted([
        ("", "", 1, 0), (key_id, created.key.prefix, 1, 300),
        (second_key.key_id, second_key.prefix, 1, 200)])
    assert all(not b.day and not b.model for b in by_key.buckets)
    assert await _report(client, account_id, admin=True, group_by=KEY, **window) == by_key


# Byte order is not a locale's order: "Zeta" before "alpha", "_x" after "Zeta".
MIXED_CASE_MODELS = ("alpha", "Zeta", "beta", "_x", "Beta", "a-b", "ab")


async def _locale_ordered_model_ids(database_url: str) -> None:
    """On PostgreSQL, model ids compared as a database with a language locale
    would (this server's default is C); SQLite has no locales."""
    if not database_url.startswith("postgresql"):
        return
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text('ALTER TABLE usage_records ALTER COLUMN model_id TYPE VARCHAR(200) '
                                    'COLLATE "und-x-icu"'))
    finally:
        await engine.dispose()


async def test_pages_cover_every_bucket_once_in_order(client: BillingClient, database_url) -> None:
    await _locale_ordered_model_ids(database_url)
    account_id = (await client.create_account(credits=PRICE)).account.account_id
    first_day = datetime(2026, 10, 1, 12, tzinfo=UTC)
    await _seed(database_url, account_id, [
        {"request_id": f"r{index}", "model_id": MIXED_CASE_MODELS[index % 7], "images": 1, "credits": index,
         "api_key_id": None, "created_at": first_day + timedelta(days=index % 11)} for index in range(40)])
    expected: dict[str, int] = defaultdict(int)
    for index in range(40):
        expected[(first_day + timedelta(days=index % 11)).date().isoformat()] += index
    for grouping, limit in ((DAY, 3), (MODEL, 2), (DAY, 11), (DAY, 1000)):
        seen: list[usage_pb2.UsageBucket] = []
        page = ""
        while True:
            report = await _report(client, account_id, group_by=grouping, limit=limit, page=page,
                                   start="2026-10-01", end="2026-11-01")
            assert len(report.buckets) <= limit
            seen.extend(report.buckets)
            if not report.has_more:
                assert report.next_page == ""
                break
            assert len(report.buckets) == limit
            page = report.next_page
        names = [b.day or b.model for b in seen]
        assert names == sorted(set(names))
        assert sum(b.requests for b in seen) == 40 and sum(b.credits_used for b in seen) == sum(range(40))
        if grouping == DAY:
            assert {b.day: b.credits_used for b in seen} == expected


async def test_another_accounts_records_are_not_reported(client: BillingClient, database_url) -> None:
    mine = (await client.create_account(credits=10 * PRICE)).account.account_id
    theirs = await client.create_account(credits=10 * PRICE)
    await _charge(client, theirs.account.account_id, "theirs", _usage("dall-e-2"), theirs.key.key_id)
    for grouping in (DAY, MODEL, KEY):
        report = await _report(client, mine, group_by=grouping)
        assert list(report.buckets) == [] and report.credits_remaining == 10 * PRICE
    assert (await _report(client, theirs.account.account_id)).buckets[0].credits_used == PRICE


async def test_default_range_is_the_last_30_days_through_today_and_unlimited_has_no_remaining(
        client: BillingClient) -> None:
    account_id = (await client.create_account(unlimited=True)).account.account_id
    await _charge(client, account_id, "today", _usage("dall-e-2"), "")
    report = await _report(client, account_id)
    tomorrow = (utc_now() + timedelta(days=1)).date()
    assert report.end == f"{tomorrow.isoformat()}T00:00:00Z"
    assert report.start == f"{(tomorrow - timedelta(days=30)).isoformat()}T00:00:00Z"
    assert report.group_by == DAY and [b.day for b in report.buckets] == [utc_now().date().isoformat()]
    assert report.unlimited and not report.HasField("credits_remaining")


@pytest.mark.parametrize(("query", "field"), [
    ({"start": "yesterday"}, "start"),
    ({"end": "2026-13-01"}, "end"),
    ({"start": "2026-11-02", "end": "2026-11-02"}, "start"),
    ({"start": "2026-11-03", "end": "2026-11-02T23:00:00Z"}, "start"),
    ({"start": "2025-01-01", "end": "2026-01-03"}, "end"),
    ({"limit": 0}, "limit"),
    ({"limit": 1001}, "limit"),
    ({"page": "not-a-cursor"}, "page"),
    ({"group_by": 9}, "group_by"),
])
async def test_an_invalid_query_names_its_field(client: BillingClient, query, field) -> None:
    account_id = (await client.create_account(credits=PRICE)).account.account_id
    error = await expect_error(_report(client, account_id, **query), "INVALID_REQUEST")
    assert error.field == field, error


async def test_a_cursor_of_another_grouping_is_refused(client: BillingClient, database_url) -> None:
    account_id = (await client.create_account(credits=PRICE)).account.account_id
    await _seed(database_url, account_id, [
        {"request_id": f"r{i}", "model_id": f"m{i}", "images": 1, "credits": 1, "api_key_id": None,
         "created_at": datetime(2026, 11, 1 + i, tzinfo=UTC)} for i in range(2)])
    window = {"start": "2026-11-01", "end": "2026-11-05"}
    first = await _report(client, account_id, group_by=MODEL, limit=1, **window)
    assert first.has_more
    error = await expect_error(_report(client, account_id, group_by=DAY, page=first.next_page, **window),
                               "INVALID_REQUEST")
    assert error.field == "page"


async def test_an_unknown_account_is_not_found(client: BillingClient) -> None:
    await expect_error(_report(client, "acct_missing"), "NOT_FOUND")
