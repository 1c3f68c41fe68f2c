"""Spending caps per API key (issue 19 item 3), through billing's real RPCs on
SQLite and PostgreSQL: a Reserve naming a capped key is refused, before it
writes anything, when its worst case would take the key past a cap; Settles and
Charges naming a key count toward its spend, late ones included; the daily cap
counts the current UTC day only."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.ext.asyncio import create_async_engine

from billing_svc.storage.schema import api_keys
from quantized.billing.v1 import billing_pb2 as pb
from quantized_runtime.clock import utc_now
from quantized_runtime.errors import ServiceError

from .conftest import BillingClient, StartBilling, expect_error, read_books

PRICE = 40_000
FUNDS = 1_000 * PRICE


async def _capped_key(client: BillingClient, account_id: str, *, daily: int | None = None,
                      total: int | None = None) -> pb.CreateApiKeyResponse:
    return await client.admin_call("CreateApiKey", pb.CreateApiKeyRequest(
        account_id=account_id, caps=pb.SpendingCaps(daily_micro_credits=daily, total_micro_credits=total)))


async def _reserve(client: BillingClient, account_id: str, key_id: str, amount: int,
                   request_id: str) -> pb.ReserveResponse:
    return await client.ledger_operation(pb.LedgerOperation(reserve=pb.ReserveRequest(
        account_id=account_id, amount_micro_credits=amount, request_id=request_id, key_id=key_id)))


async def _charge(client: BillingClient, account_id: str, key_id: str, amount: int,
                  request_id: str, lease_id: str = "") -> pb.ChargeResponse:
    return await client.ledger_operation(pb.LedgerOperation(charge=pb.ChargeRequest(
        account_id=account_id, request_id=request_id, lease_id=lease_id, amount_micro_credits=amount,
        key_id=key_id, usage=pb.UsageRecord(model_id="dall-e-2", provider="openai", images=1))))


async def _key_view(client: BillingClient, account_id: str, key_id: str) -> pb.ApiKey:
    [key] = [key for key in (await client.account(account_id)).keys if key.key_id == key_id]
    return key


async def test_a_reserve_over_the_keys_cap_is_refused_naming_the_cap_and_writes_nothing(
        client: BillingClient, database_url: str) -> None:
    account_id = (await client.create_account(credits=FUNDS)).account.account_id
    created = await _capped_key(client, account_id, daily=3 * PRICE)
    key_id = created.key.key_id
    assert created.key.caps.daily_micro_credits == 3 * PRICE
    assert not created.key.caps.HasField("total_micro_credits")
    assert (await client.authenticate(created.api_key)).key_caps.daily_micro_credits == 3 * PRICE

    first = await _reserve(client, account_id, key_id, 2 * PRICE, "req-1")
    before = await read_books(database_url, account_id)
    # The open hold counts against the cap: 2 held, 1 left.
    refusal = await expect_error(_reserve(client, account_id, key_id, 2 * PRICE, "req-2"),
                                 "INSUFFICIENT_CREDITS")
    assert refusal.message == (
        f"insufficient credits: the request may cost up to {2 * PRICE} micro-credits and API key "
        f"'{key_id}' has {PRICE} left under its daily spending cap of {3 * PRICE} micro-credits "
        "(per UTC day)")
    assert refusal.metadata == {"required_micro_credits": str(2 * PRICE),
                                "available_micro_credits": str(PRICE), "key_id": key_id,
                                "cap": "daily", "cap_micro_credits": str(3 * PRICE)}
    assert await read_books(database_url, account_id) == before

    # A retried Reserve still finds its hold, whatever the key has left.
    assert (await _reserve(client, account_id, key_id, 2 * PRICE, "req-1")).hold_id == first.hold_id
    await client.settle(first.hold_id, PRICE, pb.UsageRecord(model_id="dall-e-2", images=1))
    key = await _key_view(client, account_id, key_id)
    assert (key.spend.total_micro_credits, key.spend.today_micro_credits,
            key.spend.held_micro_credits) == (PRICE, PRICE, 0)
    # Settled for less than held: 2 of the 3 are left now.
    await _reserve(client, account_id, key_id, 2 * PRICE, "req-3")
    await expect_error(_reserve(client, account_id, key_id, 1, "req-4"), "INSUFFICIENT_CREDITS")


async def test_the_tighter_cap_is_named_and_the_account_balance_still_applies(
        client: BillingClient) -> None:
    account_id = (await client.create_account(credits=5 * PRICE)).account.account_id
    key_id = (await _capped_key(client, account_id, daily=10 * PRICE, total=2 * PRICE)).key.key_id
    refusal = await expect_error(_reserve(client, account_id, key_id, 3 * PRICE, "req-1"),
                                 "INSUFFICIENT_CREDITS")
    assert refusal.metadata["cap"] == "total"
    assert "total spending cap of 80000 micro-credits (in total)" in refusal.message
    await client.admin_call("UpdateApiKeyCaps", pb.UpdateApiKeyCapsRequest(
        key_id=key_id, caps=pb.SpendingCaps(total_micro_credits=0)))
    # No total cap now; the daily one allows 10, the account has 5.
    refusal = await expect_error(_reserve(client, account_id, key_id, 6 * PRICE, "req-2"),
                                 "INSUFFICIENT_CREDITS")
    assert "cap" not in refusal.metadata
    assert "the account has 200000 available" in refusal.message


async def test_charges_count_toward_the_keys_spend_late_ones_too(client: BillingClient) -> None:
    account_id = (await client.create_account(credits=FUNDS)).account.account_id
    key_id = (await _capped_key(client, account_id)).key.key_id
    lease = await client.ledger_operation(pb.LedgerOperation(acquire_lease=pb.AcquireLeaseRequest(
        account_id=account_id, holder="edge-test", request_id="lease-1", min_micro_credits=PRICE,
        want_micro_credits=4 * PRICE, unit_micro_credits=PRICE)))
    first = await _charge(client, account_id, key_id, PRICE, "req-1", lease.lease_id)
    assert not first.late and not first.key_capped
    await client.ledger_operation(pb.LedgerOperation(return_lease=pb.ReturnLeaseRequest(
        lease_id=lease.lease_id)))
    assert (await _charge(client, account_id, key_id, PRICE, "req-2", lease.lease_id)).late
    # A repeated Charge counts once.
    await _charge(client, account_id, key_id, PRICE, "req-2", lease.lease_id)
    key = await _key_view(client, account_id, key_id)
    assert (key.spend.total_micro_credits, key.spend.today_micro_credits) == (2 * PRICE, 2 * PRICE)

    # A cap set now counts what was spent before it: 3 in all, 2 spent.
    await client.admin_call("UpdateApiKeyCaps", pb.UpdateApiKeyCapsRequest(
        key_id=key_id, caps=pb.SpendingCaps(total_micro_credits=3 * PRICE)))
    await expect_error(_reserve(client, account_id, key_id, 2 * PRICE, "req-3"), "INSUFFICIENT_CREDITS")
    await _reserve(client, account_id, key_id, PRICE, "req-4")
    # A Charge on the lease path (an edge that has not heard of the cap yet) is
    # applied, and its answer says the key is capped now.
    assert (await _charge(client, account_id, key_id, PRICE, "req-5")).key_capped


async def test_the_daily_cap_counts_the_current_utc_day_only(client: BillingClient,
                                                             database_url: str) -> None:
    account_id = (await client.create_account(credits=FUNDS)).account.account_id
    key_id = (await _capped_key(client, account_id, daily=2 * PRICE, total=3 * PRICE)).key.key_id
    await _charge(client, account_id, key_id, 2 * PRICE, "req-1")
    await expect_error(_reserve(client, account_id, key_id, PRICE, "req-2"), "INSUFFICIENT_CREDITS")

    # The same spend, dated yesterday (UTC): today's figure starts again from 0.
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(update(api_keys).where(api_keys.c.id == key_id)
                               .values(spend_day=(utc_now() - timedelta(days=1)).date()))
    finally:
        await engine.dispose()
    key = await _key_view(client, account_id, key_id)
    assert (key.spend.total_micro_credits, key.spend.today_micro_credits) == (2 * PRICE, 0)
    # The total cap still counts yesterday: 1 left of 3.
    refusal = await expect_error(_reserve(client, account_id, key_id, 2 * PRICE, "req-3"),
                                 "INSUFFICIENT_CREDITS")
    assert refusal.metadata["cap"] == "total"
    hold = await _reserve(client, account_id, key_id, PRICE, "req-4")
    await client.settle(hold.hold_id, PRICE, pb.UsageRecord(model_id="dall-e-2", images=1))
    key = await _key_view(client, account_id, key_id)
    assert (key.spend.total_micro_credits, key.spend.today_micro_credits) == (3 * PRICE, PRICE)


async def test_a_key_of_another_account_is_refused(client: BillingClient) -> None:
    mine = (await client.create_account(credits=FUNDS)).account.account_id
    other = await client.create_account(credits=FUNDS)
    error = await expect_error(_reserve(client, mine, other.key.key_id, PRICE, "req-1"), "INVALID_REQUEST")
    assert error.field == "key_id"
    # A Charge is never refused for its key; another account's key is left alone.
    await _charge(client, mine, other.key.key_id, PRICE, "req-2")
    key = await _key_view(client, other.account.account_id, other.key.key_id)
    assert key.spend.total_micro_credits == 0


async def test_cap_updates_are_checked_and_need_the_admin_token(client: BillingClient) -> None:
    created = await client.create_account(credits=FUNDS)
    error = await expect_error(client.admin_call("UpdateApiKeyCaps", pb.UpdateApiKeyCapsRequest(
        key_id=created.key.key_id, caps=pb.SpendingCaps(daily_micro_credits=-1))), "INVALID_REQUEST")
    assert error.field == "caps.daily_micro_credits"
    await expect_error(client.admin_call("CreateApiKey", pb.CreateApiKeyRequest(
        account_id=created.account.account_id, caps=pb.SpendingCaps(total_micro_credits=-5))),
        "INVALID_REQUEST")
    await expect_error(client.admin_call("UpdateApiKeyCaps", pb.UpdateApiKeyCapsRequest(
        key_id="key_nobody", caps=pb.SpendingCaps(daily_micro_credits=1))), "NOT_FOUND")
    await expect_error(client.call(client.admin.UpdateApiKeyCaps, pb.UpdateApiKeyCapsRequest(
        key_id=created.key.key_id, caps=pb.SpendingCaps(daily_micro_credits=1))), "PERMISSION_DENIED")
    # Setting one cap keeps the other; 0 removes one.
    for caps in (pb.SpendingCaps(daily_micro_credits=5), pb.SpendingCaps(total_micro_credits=9),
                 pb.SpendingCaps(daily_micro_credits=0)):
        key = (await client.admin_call("UpdateApiKeyCaps", pb.UpdateApiKeyCapsRequest(
            key_id=created.key.key_id, caps=caps))).key
    assert not key.caps.HasField("daily_micro_credits")
    assert key.caps.total_micro_credits == 9
    assert (await client.authenticate(created.api_key)).key_caps == pb.SpendingCaps(total_micro_credits=9)


async def test_concurrent_reserves_through_two_replicas_never_pass_a_keys_cap(
        start_billing: StartBilling, database_url: str) -> None:
    """Two keys of one account with different caps, 240 Reserves racing through
    two billing servers sharing the database: each key gets exactly as many holds
    as its cap has room for, never one more."""
    first, second = await start_billing(), await start_billing()
    account_id = (await first.create_account(credits=FUNDS)).account.account_id
    caps = {(await _capped_key(first, account_id, daily=room * PRICE)).key.key_id: room
            for room in (7, 19)}

    async def attempt(index: int, key_id: str) -> bool:
        try:
            await _reserve(first if index % 2 else second, account_id, key_id, PRICE, f"req-{key_id}-{index}")
        except ServiceError as error:
            assert error.reason == "INSUFFICIENT_CREDITS" and error.metadata["cap"] == "daily"
            return False
        return True

    outcomes = await asyncio.gather(*(attempt(index, key_id)
                                      for index in range(120) for key_id in caps))
    for key_id, room in caps.items():
        key = await _key_view(first, account_id, key_id)
        assert key.spend.held_micro_credits == room * PRICE
    assert sum(outcomes) == sum(caps.values())
    books = await read_books(database_url, account_id)
    assert books.balance == books.ledger_sum == FUNDS - sum(caps.values()) * PRICE
