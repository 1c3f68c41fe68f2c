"""Holds expire: an expired hold can no longer be settled or released, and the
reaper gives its credits back (with ledger rows) so a crashed edge strands nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from billing_svc.reaper import reap_all_due

from .conftest import StartBilling, expect_error, read_books

SHORT_TTL_SECONDS = 0.2


async def wait_until_past(expires_at) -> None:
    deadline = expires_at.ToDatetime(tzinfo=UTC)
    while datetime.now(UTC) <= deadline:
        await asyncio.sleep(0.05)


async def test_an_expired_hold_is_closed_and_the_reaper_returns_its_credits(
        start_billing: StartBilling, database_url) -> None:
    client = await start_billing(hold_ttl_seconds=SHORT_TTL_SECONDS)
    account_id = (await client.create_account(credits=1_000_000)).account.account_id
    abandoned = await client.reserve(account_id, 300_000, "req-abandoned")
    await wait_until_past(abandoned.expires_at)
    before = await read_books(database_url, account_id)

    error = await expect_error(client.settle(abandoned.hold_id, 300_000), "HOLD_CLOSED")
    assert "expired" in error.message
    await expect_error(client.release(abandoned.hold_id), "HOLD_CLOSED")
    assert await read_books(database_url, account_id) == before
    assert before.held == 300_000

    assert await reap_all_due(client.running.billing) == 1
    books = await read_books(database_url, account_id)
    assert (books.balance, books.held, books.ledger_sum) == (1_000_000, 0, 1_000_000)
    assert books.ledger_rows == before.ledger_rows + 1
    assert list((await client.account(account_id)).holds) == []
    await expect_error(client.settle(abandoned.hold_id, 0), "HOLD_CLOSED")
    assert await reap_all_due(client.running.billing) == 0


async def test_the_background_reaper_runs_on_its_own(start_billing: StartBilling,
                                                     database_url) -> None:
    client = await start_billing(hold_ttl_seconds=SHORT_TTL_SECONDS,
                                 reaper_interval_seconds=0.05)
    account_id = (await client.create_account(credits=500_000)).account.account_id
    for index in range(3):
        await client.reserve(account_id, 100_000, f"req-{index}")
    for _ in range(200):
        if (await client.account(account_id)).account.held_micro_credits == 0:
            break
        await asyncio.sleep(0.05)
    books = await read_books(database_url, account_id)
    assert (books.balance, books.held, books.ledger_sum) == (500_000, 0, 500_000)
