"""Two billing servers (two replicas, as two edges would reach them) sharing one
database take a burst of concurrent reserves against one account funded for
exactly K of them: exactly K succeed and the books balance."""

from __future__ import annotations

import asyncio

from quantized_runtime.errors import ServiceError

from .conftest import StartBilling, read_books

ATTEMPTS = 240
AFFORDABLE = 60
PRICE = 40_000


async def test_concurrent_reserves_never_overdraw(start_billing: StartBilling,
                                                  database_url) -> None:
    first = await start_billing()
    second = await start_billing()
    account_id = (await first.create_account(credits=AFFORDABLE * PRICE)).account.account_id

    async def attempt(index: int) -> str | ServiceError:
        replica = first if index % 2 else second
        try:
            return (await replica.reserve(account_id, PRICE, f"req-{index}")).hold_id
        except ServiceError as error:
            return error

    outcomes = await asyncio.gather(*(attempt(i) for i in range(ATTEMPTS)))
    holds = [o for o in outcomes if isinstance(o, str)]
    refusals = [o for o in outcomes if isinstance(o, ServiceError)]
    assert len(holds) == AFFORDABLE
    assert len(set(holds)) == AFFORDABLE
    assert {e.reason for e in refusals} == {"INSUFFICIENT_CREDITS"}

    books = await read_books(database_url, account_id)
    assert books.balance == 0
    assert books.held == AFFORDABLE * PRICE
    assert books.ledger_sum == books.balance
    assert books.holds == AFFORDABLE

    # Settling them all concurrently, half in full and half flagged, also balances.
    settled = await asyncio.gather(*(
        (first if i % 2 else second).settle(hold_id, PRICE if i % 2 else 0)
        for i, hold_id in enumerate(holds)))
    assert sum(s.charged_micro_credits for s in settled) == (AFFORDABLE // 2) * PRICE
    books = await read_books(database_url, account_id)
    assert books.balance == books.ledger_sum == (AFFORDABLE // 2) * PRICE
    assert books.held == 0
    assert books.usage_records == AFFORDABLE
