"""PostgreSQL's request path has an asyncpg pool of its own, built from the same
URL as SQLAlchemy's: options in the URL's query reach it too."""

from __future__ import annotations

import pytest

from .conftest import StartBilling, read_books

PRICE = 40_000


@pytest.fixture
def database_url(postgres_url) -> str:
    """No statement cache and no TLS, as behind a transaction-pooling proxy."""
    return f"{postgres_url}?prepared_statement_cache_size=0&ssl=disable"


@pytest.mark.postgres
async def test_url_options_reach_the_request_path_pool(start_billing: StartBilling,
                                                       database_url) -> None:
    client = await start_billing()
    account_id = (await client.create_account(credits=2 * PRICE)).account.account_id

    hold = await client.reserve(account_id, PRICE, "req-options")
    assert (await client.settle(hold.hold_id, PRICE // 2)).balance_micro_credits == (
        2 * PRICE - PRICE // 2)
    books = await read_books(database_url, account_id)
    assert books.balance == books.ledger_sum == 2 * PRICE - PRICE // 2
