"""The SQLite request path runs its transactions on the event loop. When another
process holds the file's write lock, a call must wait without freezing the loop,
then go through; waiting past the limit fails and writes nothing."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from billing_svc.storage.sqlite_transactions import CHECKPOINT_EVERY_COMMITS, SqliteTransactions

from .conftest import BillingClient, read_books

PRICE = 40_000


@pytest.fixture
def database_url(sqlite_database_url) -> str:
    """This path exists on SQLite only."""
    return sqlite_database_url


def database_file(url: str) -> str:
    return url.removeprefix("sqlite+aiosqlite:///")


def hold_write_lock(path: str) -> sqlite3.Connection:
    """Another process's writer: a connection inside BEGIN IMMEDIATE."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    return other


async def test_a_reserve_waits_for_another_writer_without_freezing_the_loop(
        client: BillingClient, database_url) -> None:
    account_id = (await client.create_account(credits=3 * PRICE)).account.account_id

    other = hold_write_lock(database_file(database_url))
    try:
        pending = asyncio.create_task(client.reserve(account_id, PRICE, "req-waits"))
        for _ in range(5):
            # The loop keeps running other work while the reserve waits.
            await asyncio.sleep(0.02)
        assert not pending.done()
        # Reads do not wait for a writer (WAL).
        assert (await client.account(account_id)).account.balance_micro_credits == 3 * PRICE
    finally:
        other.rollback()
        other.close()

    hold = await pending
    books = await read_books(database_url, account_id)
    assert books.balance == books.ledger_sum == 2 * PRICE
    assert books.held == PRICE
    assert (await client.settle(hold.hold_id, PRICE)).balance_micro_credits == 2 * PRICE


async def test_a_file_locked_past_the_limit_fails_and_writes_nothing(data_dir) -> None:
    path = str(Path(data_dir) / "locked.db")
    setup = sqlite3.connect(path, isolation_level=None)
    setup.execute("CREATE TABLE t (x INTEGER)")
    setup.close()
    transactions = SqliteTransactions(path, asyncio.Lock(), busy_timeout_seconds=0.05)
    other = hold_write_lock(path)
    try:
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            await transactions.write(lambda cursor: cursor.execute("INSERT INTO t VALUES (1)"))
    finally:
        other.rollback()
        other.close()
    assert await transactions.read(
        lambda cursor: cursor.execute("SELECT count(*) FROM t").fetchone()) == (0,)
    await transactions.close()


async def test_work_that_raises_is_rolled_back(data_dir) -> None:
    path = str(Path(data_dir) / "rollback.db")
    transactions = SqliteTransactions(path, asyncio.Lock(), busy_timeout_seconds=1)
    await transactions.write(lambda cursor: cursor.execute("CREATE TABLE t (x INTEGER)"))

    def insert_then_fail(cursor: sqlite3.Cursor) -> None:
        cursor.execute("INSERT INTO t VALUES (1)")
        raise LookupError("refused after writing")

    with pytest.raises(LookupError):
        await transactions.write(insert_then_fail)
    assert await transactions.read(
        lambda cursor: cursor.execute("SELECT count(*) FROM t").fetchone()) == (0,)
    await transactions.close()


async def test_checkpoints_run_off_the_loop_every_so_many_commits(data_dir) -> None:
    path = Path(data_dir) / "checkpointed.db"
    transactions = SqliteTransactions(str(path), asyncio.Lock(), busy_timeout_seconds=1)
    await transactions.write(lambda cursor: cursor.execute("CREATE TABLE t (x BLOB)"))
    empty_size = path.stat().st_size
    for _ in range(CHECKPOINT_EVERY_COMMITS - 2):
        await transactions.write(
            lambda cursor: cursor.execute("INSERT INTO t VALUES (zeroblob(32768))"))
    # No automatic checkpoint on the loop: everything is still in the WAL.
    assert path.stat().st_size == empty_size

    await transactions.write(lambda cursor: cursor.execute("INSERT INTO t VALUES (1)"))
    # The background checkpoint copies the rows into the database file.
    for _ in range(500):
        if path.stat().st_size > empty_size:
            break
        await asyncio.sleep(0.02)
    assert path.stat().st_size > empty_size * 100
    await transactions.close()
