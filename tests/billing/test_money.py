"""Reserve, settle and release through a real billing server's Ledger stream, each
operation alone in its batch, on SQLite and PostgreSQL: the arithmetic, the usage
record, and the ledger matching the balance."""

from __future__ import annotations

import asyncio

import pytest

from quantized.billing.v1 import billing_pb2 as pb
from quantized.common.v1 import images_pb2

from .conftest import BillingClient, expect_error, read_books

DALL_E_PRICE = 640_000


def usage(images: int = 1, **upstream) -> pb.UsageRecord:
    return pb.UsageRecord(model_id="gpt-image-1", provider="openai", images=images,
                          user="student-7", usage=images_pb2.UpstreamUsage(**upstream))


async def test_reserve_then_settle_charges_the_actual_price_and_returns_the_rest(
        client: BillingClient, database_url) -> None:
    account_id = (await client.create_account(credits=100_000_000)).account.account_id
    hold = await client.reserve(account_id, 2 * DALL_E_PRICE, "req-settle")

    during = await client.account(account_id)
    assert during.account.balance_micro_credits == 100_000_000 - 2 * DALL_E_PRICE
    assert during.account.held_micro_credits == 2 * DALL_E_PRICE
    assert [(h.hold_id, h.amount_micro_credits, h.request_id) for h in during.holds] == [
        (hold.hold_id, 2 * DALL_E_PRICE, "req-settle")]

    settled = await client.settle(hold.hold_id, DALL_E_PRICE,
                                  usage(images=1, input_tokens=10, output_tokens=4160,
                                        total_tokens=4170, megapixels=1.05))
    assert settled.charged_micro_credits == DALL_E_PRICE
    assert settled.HasField("balance_micro_credits")
    assert settled.balance_micro_credits == 99_360_000  # the spec's example

    after = await client.account(account_id)
    assert after.account.balance_micro_credits == 99_360_000
    assert after.account.held_micro_credits == 0
    assert list(after.holds) == []
    [entry] = after.recent_usage
    assert entry.request_id == "req-settle"
    assert entry.micro_credits == DALL_E_PRICE
    assert (entry.usage.model_id, entry.usage.provider, entry.usage.images, entry.usage.user) == (
        "gpt-image-1", "openai", 1, "student-7")
    assert (entry.usage.usage.input_tokens, entry.usage.usage.output_tokens,
            entry.usage.usage.total_tokens) == (10, 4160, 4170)
    assert entry.usage.usage.megapixels == pytest.approx(1.05)
    assert entry.time.ToDatetime().year >= 2026

    books = await read_books(database_url, account_id)
    assert books.ledger_sum == books.balance == 99_360_000
    assert books.ledger_rows == 3  # grant, hold, settle
    assert books.usage_records == 1


async def test_flagged_images_cost_nothing(client: BillingClient, database_url) -> None:
    account_id = (await client.create_account(credits=1_000_000)).account.account_id
    hold = await client.reserve(account_id, DALL_E_PRICE, "req-flagged")
    settled = await client.settle(hold.hold_id, 0, usage(images=0))
    assert settled.charged_micro_credits == 0
    assert settled.balance_micro_credits == 1_000_000
    [entry] = (await client.account(account_id)).recent_usage
    assert (entry.usage.images, entry.micro_credits) == (0, 0)
    books = await read_books(database_url, account_id)
    assert books.ledger_sum == books.balance == 1_000_000


async def test_partly_flagged_request_pays_only_for_generated_images(
        client: BillingClient, database_url) -> None:
    account_id = (await client.create_account(credits=1_000_000)).account.account_id
    hold = await client.reserve(account_id, 4 * 40_000, "req-partial")
    settled = await client.settle(hold.hold_id, 3 * 40_000, usage(images=3))
    assert settled.charged_micro_credits == 120_000
    assert settled.balance_micro_credits == 880_000
    books = await read_books(database_url, account_id)
    assert books.ledger_sum == books.balance == 880_000
    assert books.held == 0


async def test_failed_upstream_call_releases_everything(client: BillingClient,
                                                        database_url) -> None:
    account_id = (await client.create_account(credits=1_000_000)).account.account_id
    hold = await client.reserve(account_id, 300_000, "req-failed")
    released = await client.release(hold.hold_id)
    assert released.balance_micro_credits == 1_000_000
    view = await client.account(account_id)
    assert (view.account.held_micro_credits, list(view.holds), list(view.recent_usage)) == (
        0, [], [])
    books = await read_books(database_url, account_id)
    assert books.ledger_sum == books.balance == 1_000_000
    assert books.usage_records == 0


async def test_insufficient_credits_says_how_much_and_writes_nothing(
        client: BillingClient, database_url) -> None:
    account_id = (await client.create_account(credits=500_000)).account.account_id
    before = await read_books(database_url, account_id)
    error = await expect_error(client.reserve(account_id, 640_000, "req-poor"),
                               "INSUFFICIENT_CREDITS")
    assert "640000" in error.message and "500000" in error.message
    assert error.metadata == {"required_micro_credits": "640000",
                              "available_micro_credits": "500000"}
    assert await read_books(database_url, account_id) == before


async def test_an_account_funded_exactly_can_spend_its_last_credit(
        client: BillingClient, database_url) -> None:
    account_id = (await client.create_account(credits=640_000)).account.account_id
    hold = await client.reserve(account_id, 640_000, "req-exact")
    await expect_error(client.reserve(account_id, 1, "req-one-more"), "INSUFFICIENT_CREDITS")
    settled = await client.settle(hold.hold_id, 640_000, usage())
    assert settled.balance_micro_credits == 0
    books = await read_books(database_url, account_id)
    assert books.ledger_sum == books.balance == 0


async def test_unlimited_accounts_always_reserve_and_report_no_balance(
        client: BillingClient, database_url) -> None:
    created = await client.create_account(unlimited=True)
    account_id = created.account.account_id
    assert created.account.unlimited
    identity = await client.authenticate(created.api_key)
    assert identity.unlimited

    hold = await client.reserve(account_id, 10**12, "req-big")
    settled = await client.settle(hold.hold_id, 640_000, usage())
    assert settled.charged_micro_credits == 640_000
    assert not settled.HasField("balance_micro_credits")
    other = await client.reserve(account_id, 640_000, "req-released")
    assert not (await client.release(other.hold_id)).HasField("balance_micro_credits")
    books = await read_books(database_url, account_id)
    # The ledger still records the spend, so the books balance for every account.
    assert books.ledger_sum == books.balance == -640_000


async def test_a_retried_reserve_returns_the_same_hold(client: BillingClient,
                                                       database_url) -> None:
    account_id = (await client.create_account(credits=1_000_000)).account.account_id
    first = await client.reserve(account_id, 600_000, "req-retried")
    # The account could not afford a second hold, yet the retry is answered.
    again = await client.reserve(account_id, 600_000, "req-retried")
    assert again.hold_id == first.hold_id
    assert again.expires_at == first.expires_at
    mismatch = await expect_error(client.reserve(account_id, 700_000, "req-retried"),
                                  "INVALID_REQUEST")
    assert mismatch.field == "request_id"
    books = await read_books(database_url, account_id)
    assert (books.holds, books.held, books.balance, books.ledger_sum) == (
        1, 600_000, 400_000, 400_000)


async def test_a_retry_racing_its_original_places_one_hold(start_billing,
                                                           database_url) -> None:
    client = await start_billing()
    account_id = (await client.create_account(credits=10_000_000)).account.account_id
    holds = await asyncio.gather(*(client.reserve(account_id, 100_000, "req-race")
                                   for _ in range(20)))
    assert len({h.hold_id for h in holds}) == 1
    books = await read_books(database_url, account_id)
    assert (books.holds, books.held, books.ledger_sum, books.balance) == (
        1, 100_000, 9_900_000, 9_900_000)


async def test_settling_twice_or_after_release_is_hold_closed(client: BillingClient,
                                                              database_url) -> None:
    account_id = (await client.create_account(credits=1_000_000)).account.account_id
    settled = await client.reserve(account_id, 100_000, "req-a")
    await client.settle(settled.hold_id, 50_000, usage())
    released = await client.reserve(account_id, 100_000, "req-b")
    await client.release(released.hold_id)
    before = await read_books(database_url, account_id)

    error = await expect_error(client.settle(settled.hold_id, 50_000, usage()), "HOLD_CLOSED")
    assert "settled" in error.message
    await expect_error(client.release(settled.hold_id), "HOLD_CLOSED")
    await expect_error(client.settle(released.hold_id, 0, usage()), "HOLD_CLOSED")
    await expect_error(client.release(released.hold_id), "HOLD_CLOSED")
    assert await read_books(database_url, account_id) == before
    assert before.balance == before.ledger_sum == 950_000


@pytest.mark.parametrize(("call", "reason", "field"), [
    ("reserve_negative", "INVALID_REQUEST", "amount_micro_credits"),
    ("reserve_too_large", "INVALID_REQUEST", "amount_micro_credits"),
    ("reserve_without_request_id", "INVALID_REQUEST", "request_id"),
    ("reserve_unknown_account", "NOT_FOUND", None),
    ("settle_negative", "INVALID_REQUEST", "amount_micro_credits"),
    ("settle_more_than_held", "INVALID_REQUEST", "amount_micro_credits"),
    ("settle_negative_images", "INVALID_REQUEST", "usage.images"),
    ("settle_negative_tokens", "INVALID_REQUEST", "usage.output_tokens"),
    ("settle_unknown_hold", "NOT_FOUND", None),
    ("release_unknown_hold", "NOT_FOUND", None),
    ("release_without_hold_id", "INVALID_REQUEST", "hold_id"),
])
async def test_bad_input_is_a_typed_error_and_writes_nothing(
        client: BillingClient, database_url, call, reason, field) -> None:
    account_id = (await client.create_account(credits=1_000_000)).account.account_id
    hold = await client.reserve(account_id, 100_000, "req-open")
    calls = {
        "reserve_negative": lambda: client.reserve(account_id, -1, "req-x"),
        "reserve_too_large": lambda: client.reserve(account_id, 10**15 + 1, "req-x"),
        "reserve_without_request_id": lambda: client.reserve(account_id, 1, " "),
        "reserve_unknown_account": lambda: client.reserve("acct_missing", 1, "req-x"),
        "settle_negative": lambda: client.settle(hold.hold_id, -5, usage()),
        "settle_more_than_held": lambda: client.settle(hold.hold_id, 100_001, usage()),
        "settle_negative_images": lambda: client.settle(hold.hold_id, 0, usage(images=-1)),
        "settle_negative_tokens": lambda: client.settle(hold.hold_id, 0,
                                                        usage(output_tokens=-3)),
        "settle_unknown_hold": lambda: client.settle("hold_missing", 0, usage()),
        "release_unknown_hold": lambda: client.release("hold_missing"),
        "release_without_hold_id": lambda: client.release(""),
    }
    before = await read_books(database_url, account_id)
    error = await expect_error(calls[call](), reason)
    assert error.field == field
    assert await read_books(database_url, account_id) == before
    # The open hold is untouched and still settles normally.
    assert (await client.settle(hold.hold_id, 100_000, usage())).balance_micro_credits == 900_000


async def test_grants_add_credits_through_the_ledger(client: BillingClient,
                                                     database_url) -> None:
    account_id = (await client.create_account(credits=0)).account.account_id
    await expect_error(client.reserve(account_id, 1, "req-empty"), "INSUFFICIENT_CREDITS")
    granted = await client.admin_call("GrantCredits", pb.GrantCreditsRequest(
        account_id=account_id, amount_micro_credits=2_500_000))
    assert granted.account.balance_micro_credits == 2_500_000
    await client.reserve(account_id, 1, "req-funded")
    books = await read_books(database_url, account_id)
    assert books.ledger_sum == books.balance == 2_499_999

    for amount in (0, -10):
        error = await expect_error(client.admin_call("GrantCredits", pb.GrantCreditsRequest(
            account_id=account_id, amount_micro_credits=amount)), "INVALID_REQUEST")
        assert error.field == "amount_micro_credits"
    await expect_error(client.admin_call("GrantCredits", pb.GrantCreditsRequest(
        account_id="acct_missing", amount_micro_credits=5)), "NOT_FOUND")
    assert await read_books(database_url, account_id) == books
