"""Credit leases through the Ledger stream of a real billing server, on SQLite
and PostgreSQL: a lease is sized within billing's share of the available
balance, spent down by Charges, extended, returned or expired; a Charge is
applied once, and one its lease cannot take is applied to the balance (late),
never dropped. After every scenario the books balance: `balance` is the sum of
the ledger and `held` the unspent part of open holds and leases."""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from billing_svc.reaper import reap_all_due
from billing_svc.storage.schema import holds, ledger, usage_records
from quantized.billing.v1 import billing_pb2 as pb
from quantized_runtime.logging import JsonFormatter

from .conftest import BillingClient, Books, StartBilling, read_books
from .test_hold_expiry import wait_until_past
from .test_ledger_stream import LedgerStream, error, release, reserve, settle

PRICE = 40_000
USAGE = pb.UsageRecord(model_id="gpt-image-1", provider="openai", images=1)


def acquire(account_id: str, request_id: str, *, minimum: int, want: int,
            unit: int = PRICE, holder: str = "edge-1") -> pb.LedgerOperation:
    return pb.LedgerOperation(acquire_lease=pb.AcquireLeaseRequest(
        account_id=account_id, holder=holder, request_id=request_id,
        min_micro_credits=minimum, want_micro_credits=want, unit_micro_credits=unit))


def extend(lease_id: str, *, minimum: int = 0, want: int = 0,
           unit: int = PRICE) -> pb.LedgerOperation:
    return pb.LedgerOperation(extend_lease=pb.ExtendLeaseRequest(
        lease_id=lease_id, min_micro_credits=minimum, want_micro_credits=want,
        unit_micro_credits=unit))


def charge(account_id: str, request_id: str, lease_id: str = "",
           amount: int = PRICE) -> pb.LedgerOperation:
    return pb.LedgerOperation(charge=pb.ChargeRequest(
        account_id=account_id, request_id=request_id, lease_id=lease_id,
        amount_micro_credits=amount, usage=USAGE))


def return_lease(lease_id: str) -> pb.LedgerOperation:
    return pb.LedgerOperation(return_lease=pb.ReturnLeaseRequest(lease_id=lease_id))


async def balanced_books(database_url: str, account_id: str) -> Books:
    """The account's books, after checking both invariants."""
    books = await read_books(database_url, account_id)
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            open_unspent = (await conn.execute(
                select(func.coalesce(func.sum(holds.c.amount
                                              - func.coalesce(holds.c.charged, 0)), 0))
                .where(holds.c.account_id == account_id, holds.c.status == "open"))).scalar_one()
    finally:
        await engine.dispose()
    assert books.balance == books.ledger_sum, books
    assert books.held == open_unspent, books
    return books


async def ledger_kinds(database_url: str, account_id: str) -> list[tuple[str, int]]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(ledger.c.kind, ledger.c.amount)
                                       .where(ledger.c.account_id == account_id)
                                       .order_by(ledger.c.id))).all()
    finally:
        await engine.dispose()
    return [(row.kind, row.amount) for row in rows]


async def usage_of(database_url: str, account_id: str) -> list[tuple[str, str | None, int, bool]]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(
                select(usage_records.c.request_id, usage_records.c.hold_id,
                       usage_records.c.credits, usage_records.c.late)
                .where(usage_records.c.account_id == account_id)
                .order_by(usage_records.c.id))).all()
    finally:
        await engine.dispose()
    return [(row.request_id, row.hold_id, row.credits, bool(row.late)) for row in rows]


@pytest.fixture
async def stream(client: BillingClient):
    opened = LedgerStream(client)
    yield opened
    await opened.close()


async def test_a_lease_is_a_multiple_of_unit_within_the_share_and_idempotent(
        client: BillingClient, stream: LedgerStream, database_url) -> None:
    account_id = (await client.create_account(credits=1_000_000)).account.account_id
    before = datetime.now(UTC)

    # Half of 1,000,000 is 500,000; in whole prices of 40,000 that is 480,000.
    [placed] = await stream.batch(acquire(account_id, "lease-1", minimum=PRICE,
                                          want=10 * 1_000_000))
    lease = placed.acquire_lease
    assert (lease.amount_micro_credits, lease.charged_micro_credits) == (480_000, 0)
    assert lease.spendable_micro_credits == 1_000_000
    assert lease.lease_id.startswith("lease_")
    expiry = lease.expires_at.ToDatetime(tzinfo=UTC)
    assert before + timedelta(seconds=29) < expiry < datetime.now(UTC) + timedelta(seconds=31)

    # A repeat returns the first lease; a smaller want is granted exactly.
    repeated, smaller = await stream.batch(
        acquire(account_id, "lease-1", minimum=PRICE, want=10 * 1_000_000),
        acquire(account_id, "lease-2", minimum=PRICE, want=3 * PRICE + 1))
    assert repeated.acquire_lease == lease
    assert smaller.acquire_lease.amount_micro_credits == 3 * PRICE

    books = await balanced_books(database_url, account_id)
    assert (books.balance, books.held, books.holds) == (400_000, 600_000, 2)
    assert await ledger_kinds(database_url, account_id) == [
        ("grant", 1_000_000), ("hold", -480_000), ("hold", -3 * PRICE)]
    view = await client.account(account_id)
    assert {h.request_id for h in view.holds} == {"lease-1", "lease-2"}


async def test_a_lease_below_its_minimum_is_refused_and_writes_nothing(
        client: BillingClient, stream: LedgerStream, database_url) -> None:
    account_id = (await client.create_account(credits=3 * PRICE)).account.account_id

    # Half of 3 prices rounds down to one price, less than the minimum of two.
    refused, any_amount = await stream.batch(
        acquire(account_id, "lease-1", minimum=2 * PRICE, want=10 * PRICE),
        acquire(account_id, "lease-2", minimum=1, want=10 * PRICE, unit=0))

    refusal = error(refused)
    assert refusal.reason == "INSUFFICIENT_CREDITS"
    assert refusal.metadata == {"required_micro_credits": str(2 * PRICE),
                                "available_micro_credits": str(3 * PRICE)}
    assert any_amount.acquire_lease.amount_micro_credits == 3 * PRICE // 2
    books = await balanced_books(database_url, account_id)
    assert (books.holds, books.ledger_rows) == (1, 2)


async def test_extend_adds_within_the_share_and_renews_the_expiry(
        start_billing: StartBilling, database_url) -> None:
    client = await start_billing(lease_ttl_seconds=60)
    stream = LedgerStream(client)
    account_id = (await client.create_account(credits=1_000_000)).account.account_id
    [placed] = await stream.batch(acquire(account_id, "lease-1", minimum=PRICE, want=200_000))
    lease = placed.acquire_lease

    # 800,000 available: at most 400,000, in prices: 400,000; want caps it at 120,000.
    grown, renewed = await stream.batch(
        extend(lease.lease_id, minimum=PRICE, want=3 * PRICE),
        extend(lease.lease_id))
    assert grown.extend_lease.amount_micro_credits == 200_000 + 3 * PRICE
    assert grown.extend_lease.spendable_micro_credits == 1_000_000
    assert renewed.extend_lease.amount_micro_credits == 200_000 + 3 * PRICE
    assert renewed.extend_lease.expires_at.ToDatetime() >= lease.expires_at.ToDatetime()

    # Too much to add is refused whole: neither credits nor a new expiry.
    [too_much] = await stream.batch(extend(lease.lease_id, minimum=500_000, want=500_000))
    assert error(too_much).reason == "INSUFFICIENT_CREDITS"
    books = await balanced_books(database_url, account_id)
    assert (books.balance, books.held) == (1_000_000 - 320_000, 320_000)
    assert await ledger_kinds(database_url, account_id) == [
        ("grant", 1_000_000), ("hold", -200_000), ("hold", -3 * PRICE)]

    [hold] = await stream.batch(reserve(account_id, PRICE, "req-1"))
    [returned] = await stream.batch(return_lease(lease.lease_id))
    assert returned.return_lease.returned_micro_credits == 320_000
    closed, unknown, not_a_lease = await stream.batch(
        extend(lease.lease_id), extend("lease_unknown"), extend(hold.reserve.hold_id))
    assert error(closed).reason == "HOLD_CLOSED"
    assert "already released" in error(closed).message
    assert error(unknown).reason == error(not_a_lease).reason == "NOT_FOUND"
    await stream.close()
    await balanced_books(database_url, account_id)


async def test_charges_spend_the_lease_once_and_return_gives_back_the_unspent_part(
        client: BillingClient, stream: LedgerStream, database_url) -> None:
    account_id = (await client.create_account(credits=1_000_000)).account.account_id
    [placed] = await stream.batch(acquire(account_id, "lease-1", minimum=PRICE, want=400_000))
    lease_id = placed.acquire_lease.lease_id

    first, again_in_batch, flagged = await stream.batch(
        charge(account_id, "req-1", lease_id), charge(account_id, "req-1", lease_id),
        charge(account_id, "req-2", lease_id, amount=0))
    [again_later] = await stream.batch(charge(account_id, "req-1", lease_id))

    assert (first.charge.charged_micro_credits, first.charge.late) == (PRICE, False)
    assert first.charge.spendable_micro_credits == 1_000_000 - PRICE
    assert again_in_batch.charge == again_later.charge == first.charge
    assert (flagged.charge.charged_micro_credits, flagged.charge.late) == (0, False)
    books = await balanced_books(database_url, account_id)
    # The charge left `held`, not the balance: that moved when the lease was placed.
    assert (books.balance, books.held, books.ledger_rows) == (600_000, 400_000 - PRICE, 2)
    assert await usage_of(database_url, account_id) == [
        ("req-1", lease_id, PRICE, False), ("req-2", lease_id, 0, False)]

    [returned] = await stream.batch(return_lease(lease_id))
    assert returned.return_lease.returned_micro_credits == 400_000 - PRICE
    assert returned.return_lease.spendable_micro_credits == 1_000_000 - PRICE
    [twice] = await stream.batch(return_lease(lease_id))
    assert error(twice).reason == "HOLD_CLOSED"
    books = await balanced_books(database_url, account_id)
    assert (books.balance, books.held) == (1_000_000 - PRICE, 0)
    assert await ledger_kinds(database_url, account_id) == [
        ("grant", 1_000_000), ("hold", -400_000), ("release", 400_000 - PRICE)]


async def test_a_charge_the_lease_cannot_cover_is_taken_from_the_balance(
        client: BillingClient, stream: LedgerStream, database_url) -> None:
    account_id = (await client.create_account(credits=1_000_000)).account.account_id
    [placed] = await stream.batch(acquire(account_id, "lease-1", minimum=PRICE, want=PRICE))
    lease_id = placed.acquire_lease.lease_id
    late_before = REGISTRY.get_sample_value("quantized_billing_late_charges_total") or 0

    covered, short = await stream.batch(charge(account_id, "req-1", lease_id, PRICE // 2),
                                        charge(account_id, "req-2", lease_id, PRICE))

    assert covered.charge.late is False
    assert short.charge.late is True
    assert short.charge.spendable_micro_credits == 1_000_000 - PRICE // 2 - PRICE
    books = await balanced_books(database_url, account_id)
    assert (books.balance, books.held) == (1_000_000 - 2 * PRICE, PRICE // 2)
    assert await usage_of(database_url, account_id) == [
        ("req-1", lease_id, PRICE // 2, False), ("req-2", None, PRICE, True)]
    assert client.running.billing.late_charges == 1
    assert REGISTRY.get_sample_value("quantized_billing_late_charges_total") - late_before == 1


async def test_late_charges_after_return_and_expiry_are_applied_below_zero_then_402(
        start_billing: StartBilling, database_url, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="quantized.billing.leases")
    caplog.handler.setFormatter(JsonFormatter())
    client = await start_billing(lease_ttl_seconds=0.3)
    stream = LedgerStream(client)
    account_id = (await client.create_account(credits=4 * PRICE)).account.account_id
    returned_lease, expiring_lease = [r.acquire_lease.lease_id for r in await stream.batch(
        acquire(account_id, "lease-1", minimum=PRICE, want=PRICE),
        acquire(account_id, "lease-2", minimum=PRICE, want=PRICE))]
    await stream.batch(charge(account_id, "req-1", returned_lease),
                       return_lease(returned_lease),
                       reserve(account_id, 2 * PRICE, "req-held"))
    assert (await balanced_books(database_url, account_id)).balance == 0

    after_return, repeated = await stream.batch(
        charge(account_id, "req-2", returned_lease), charge(account_id, "req-2", returned_lease))
    await wait_until_past((await client.account(account_id)).holds[0].expires_at)
    [after_expiry] = await stream.batch(charge(account_id, "req-3", expiring_lease))

    assert after_return.charge.late and after_expiry.charge.late
    assert repeated.charge == after_return.charge
    # Granted minus charged: the holds and the expired lease are not spent yet.
    assert after_expiry.charge.spendable_micro_credits == 4 * PRICE - 3 * PRICE
    books = await balanced_books(database_url, account_id)
    assert books.balance == -2 * PRICE
    assert client.running.billing.late_charges == 2
    late_lines = [line for line in caplog.text.splitlines() if "late charge" in line]
    assert len(late_lines) == 2
    assert f'"lease_id": "{expiring_lease}"' in late_lines[1]
    assert '"charge_request_id": "req-3"' in late_lines[1]
    assert '"late_charges_total": 2' in late_lines[1]

    # The reaper returns the expired lease's unspent part, all of it here.
    assert await reap_all_due(client.running.billing) == 1
    books = await balanced_books(database_url, account_id)
    assert books.balance == -PRICE
    refused_reserve, refused_lease = await stream.batch(
        reserve(account_id, 1, "req-4"), acquire(account_id, "lease-3", minimum=1, want=PRICE))
    assert error(refused_reserve).reason == error(refused_lease).reason == "INSUFFICIENT_CREDITS"
    assert (await balanced_books(database_url, account_id)).balance == -PRICE

    await client.admin_call("GrantCredits", pb.GrantCreditsRequest(
        account_id=account_id, amount_micro_credits=3 * PRICE))
    [placed] = await stream.batch(acquire(account_id, "lease-3", minimum=1, want=PRICE))
    assert placed.acquire_lease.amount_micro_credits == PRICE
    await stream.close()
    await balanced_books(database_url, account_id)
    assert await ledger_kinds(database_url, account_id) == [
        ("grant", 4 * PRICE), ("hold", -PRICE), ("hold", -PRICE), ("release", 0),
        ("hold", -2 * PRICE), ("charge", -PRICE), ("charge", -PRICE), ("expire", PRICE),
        ("grant", 3 * PRICE), ("hold", -PRICE)]


async def test_an_unlimited_account_is_charged_without_a_lease(
        client: BillingClient, stream: LedgerStream, database_url) -> None:
    account_id = (await client.create_account(unlimited=True)).account.account_id

    first, repeated = await stream.batch(charge(account_id, "req-1"),
                                         charge(account_id, "req-1"))

    assert (first.charge.charged_micro_credits, first.charge.late) == (PRICE, False)
    assert not first.charge.HasField("spendable_micro_credits")
    assert repeated.charge == first.charge
    books = await balanced_books(database_url, account_id)
    assert (books.balance, books.held, books.usage_records) == (-PRICE, 0, 1)
    assert client.running.billing.late_charges == 0


async def test_another_accounts_lease_is_never_spent(
        client: BillingClient, stream: LedgerStream, database_url) -> None:
    """Charging account A with B's lease is a late charge on A's balance."""
    account_a = (await client.create_account(credits=1_000_000)).account.account_id
    account_b = (await client.create_account(credits=1_000_000)).account.account_id
    [placed] = await stream.batch(acquire(account_b, "lease-b", minimum=PRICE, want=PRICE))
    lease_b = placed.acquire_lease.lease_id
    books_b = await balanced_books(database_url, account_b)

    [charged] = await stream.batch(charge(account_a, "req-1", lease_b))

    assert charged.charge.late is True
    assert (await balanced_books(database_url, account_a)).balance == 1_000_000 - PRICE
    assert await balanced_books(database_url, account_b) == books_b
    [returned] = await stream.batch(return_lease(lease_b))
    assert returned.return_lease.returned_micro_credits == PRICE


async def test_leases_and_request_holds_are_not_interchangeable(
        client: BillingClient, stream: LedgerStream, database_url) -> None:
    account_id = (await client.create_account(credits=1_000_000)).account.account_id
    lease, hold = await stream.batch(acquire(account_id, "id-1", minimum=PRICE, want=PRICE),
                                     reserve(account_id, PRICE, "id-2"))
    lease_id = lease.acquire_lease.lease_id

    results = await stream.batch(
        settle(lease_id, 0), release(lease_id), reserve(account_id, PRICE, "id-1"),
        acquire(account_id, "id-2", minimum=PRICE, want=PRICE),
        return_lease(hold.reserve.hold_id))

    assert [(error(r).reason, error(r).field) for r in results] == [
        ("INVALID_REQUEST", "hold_id"), ("INVALID_REQUEST", "hold_id"),
        ("INVALID_REQUEST", "request_id"), ("INVALID_REQUEST", "request_id"),
        ("NOT_FOUND", None)]
    books = await balanced_books(database_url, account_id)
    assert (books.held, books.ledger_rows) == (2 * PRICE, 3)


async def test_lease_operations_failing_their_checks_are_refused(
        client: BillingClient, stream: LedgerStream, database_url) -> None:
    account_id = (await client.create_account(credits=1_000_000)).account.account_id

    results = await stream.batch(
        acquire(account_id, "lease-1", minimum=2 * PRICE, want=PRICE),
        acquire(account_id, "lease-2", minimum=-1, want=PRICE),
        acquire("", "lease-3", minimum=0, want=PRICE),
        acquire(account_id, "x" * 201, minimum=0, want=PRICE),
        acquire(account_id, "lease-4", minimum=0, want=PRICE, holder="h" * 201),
        acquire("acct_unknown", "lease-5", minimum=0, want=PRICE),
        extend("", want=PRICE),
        extend("lease_x", want=10**15 + 1),
        charge(account_id, "", "lease_x"),
        charge(account_id, "req-1", "lease_x", amount=-1),
        charge("acct_unknown", "req-1"),
        return_lease(" "))

    assert [(error(r).reason, error(r).field) for r in results] == [
        ("INVALID_REQUEST", "want_micro_credits"), ("INVALID_REQUEST", "min_micro_credits"),
        ("INVALID_REQUEST", "account_id"), ("INVALID_REQUEST", "request_id"),
        ("INVALID_REQUEST", "holder"), ("NOT_FOUND", None),
        ("INVALID_REQUEST", "lease_id"), ("INVALID_REQUEST", "want_micro_credits"),
        ("INVALID_REQUEST", "request_id"), ("INVALID_REQUEST", "amount_micro_credits"),
        ("NOT_FOUND", None), ("INVALID_REQUEST", "lease_id")]
    books = await balanced_books(database_url, account_id)
    assert (books.holds, books.ledger_rows, books.usage_records) == (0, 1, 0)


async def test_the_reaper_returns_an_expired_leases_unspent_part(
        start_billing: StartBilling, database_url) -> None:
    client = await start_billing(lease_ttl_seconds=0.3)
    stream = LedgerStream(client)
    account_id = (await client.create_account(credits=1_000_000)).account.account_id
    [placed] = await stream.batch(acquire(account_id, "lease-1", minimum=PRICE, want=400_000))
    lease = placed.acquire_lease
    await stream.batch(charge(account_id, "req-1", lease.lease_id))
    await wait_until_past(lease.expires_at)

    [expired] = await stream.batch(return_lease(lease.lease_id))
    assert (error(expired).reason, "expired" in error(expired).message) == ("HOLD_CLOSED", True)
    assert await reap_all_due(client.running.billing) == 1
    await stream.close()

    books = await balanced_books(database_url, account_id)
    assert (books.balance, books.held) == (1_000_000 - PRICE, 0)
    assert (await ledger_kinds(database_url, account_id))[-1] == ("expire", 400_000 - PRICE)


async def test_concurrent_acquisitions_from_several_edges_never_exceed_the_balance(
        start_billing: StartBilling, database_url) -> None:
    """Many edges (four streams through two servers sharing the database) race for
    leases and holds on one account: whatever the order, each lease is half of
    what is left, capped by want, so the grants are always the same and their sum
    with the holds never exceeds what was granted to the account."""
    first, second = await start_billing(), await start_billing()
    account_id = (await first.create_account(credits=1_000_000)).account.account_id
    streams = [LedgerStream(first), LedgerStream(second), LedgerStream(first),
               LedgerStream(second)]
    operations = [acquire(account_id, f"lease-{i}", minimum=10_000, want=200_000, unit=10_000,
                          holder=f"edge-{i % 4}") for i in range(40)]
    shuffle = random.Random(14)
    shuffle.shuffle(operations)
    batches: list[list[pb.LedgerOperation]] = []
    while operations:
        size = shuffle.randint(1, 6)
        batches.append(operations[:size])
        operations = operations[size:]

    replies = await asyncio.gather(*(streams[n % 4].batch(*batch)
                                     for n, batch in enumerate(batches)))
    results = [result for reply in replies for result in reply]
    granted = sorted((r.acquire_lease.amount_micro_credits for r in results
                      if r.HasField("acquire_lease")), reverse=True)
    assert granted == [200_000] * 4 + [100_000, 50_000, 20_000, 10_000, 10_000]
    assert {error(r).reason for r in results if r.HasField("error")} == {"INSUFFICIENT_CREDITS"}

    # The last 10,000 go to exact holds, and no further.
    reserves = await asyncio.gather(*(streams[i % 4].batch(reserve(account_id, 5_000, f"r{i}"))
                                      for i in range(8)))
    assert sum(1 for [r] in reserves if r.HasField("reserve")) == 2
    for opened in streams:
        await opened.close()
    books = await balanced_books(database_url, account_id)
    assert (books.balance, books.held) == (0, 1_000_000)
