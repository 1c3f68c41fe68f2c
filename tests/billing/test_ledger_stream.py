"""The Ledger stream through a real billing server and the generated stub, on
SQLite and PostgreSQL: each batch is answered by batch_id with one result per
operation, in order; each operation succeeds or fails on its own (as it does
alone in a batch, tests/billing/test_money.py), a refused one writes nothing,
and the books balance."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random

import asyncpg
import grpc
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from billing_svc.servicer import MAX_BATCH_OPERATIONS
from quantized.billing.v1 import billing_pb2 as pb
from quantized_runtime.errors import ServiceError, from_call_error
from quantized_runtime.logging import JsonFormatter

from .conftest import BillingClient, StartBilling, read_books

PRICE = 40_000
ATTEMPTS = 240
AFFORDABLE = 60


def reserve(account_id: str, amount: int, request_id: str) -> pb.LedgerOperation:
    return pb.LedgerOperation(reserve=pb.ReserveRequest(
        account_id=account_id, amount_micro_credits=amount, request_id=request_id))


def settle(hold_id: str, amount: int) -> pb.LedgerOperation:
    return pb.LedgerOperation(settle=pb.SettleRequest(
        hold_id=hold_id, amount_micro_credits=amount,
        usage=pb.UsageRecord(model_id="gpt-image-1", provider="openai", images=1)))


def release(hold_id: str) -> pb.LedgerOperation:
    return pb.LedgerOperation(release=pb.ReleaseRequest(hold_id=hold_id))


async def execute(database_url: str, statement: str) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


def error(result: pb.LedgerResult) -> ServiceError:
    assert result.WhichOneof("result") == "error", result
    return from_call_error(result.error)


class LedgerStream:
    """One Ledger call: batches go out as they come, replies are matched by batch_id."""

    def __init__(self, client: BillingClient) -> None:
        self._call = client.billing.Ledger(timeout=120)
        self._batch_ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[pb.LedgerResponse]] = {}
        self._writing = asyncio.Lock()  # grpc.aio allows one write at a time
        # Set when billing says it is stopping.
        self.draining = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while (reply := await self._call.read()) is not grpc.aio.EOF:
                if reply.draining:
                    self.draining.set()
                else:
                    self._waiting.pop(reply.batch_id).set_result(reply)
        finally:
            # A call that ends early fails the batches it left unanswered.
            for unanswered in self._waiting.values():
                if not unanswered.done():
                    unanswered.set_exception(AssertionError("the call ended unanswered"))

    async def send(self, *operations: pb.LedgerOperation) -> asyncio.Future[pb.LedgerResponse]:
        """Send a batch; the future is its reply."""
        batch_id = next(self._batch_ids)
        reply = asyncio.get_running_loop().create_future()
        self._waiting[batch_id] = reply
        async with self._writing:
            await self._call.write(pb.LedgerRequest(batch_id=batch_id, operations=operations))
        return reply

    async def batch(self, *operations: pb.LedgerOperation) -> list[pb.LedgerResult]:
        reply = await (await self.send(*operations))
        assert len(reply.results) == len(operations)
        return list(reply.results)

    async def code(self) -> grpc.StatusCode:
        """How the call ended, once its replies are all read."""
        await self._reader
        return await self._call.code()

    async def close(self) -> None:
        """Close our side; the server answers what is in flight, then ends the call OK."""
        async with self._writing:
            await self._call.done_writing()
        await self._reader
        assert await self._call.code() == grpc.StatusCode.OK
        assert not self._waiting


@pytest.fixture
async def stream(client: BillingClient):
    opened = LedgerStream(client)
    yield opened
    await opened.close()


async def test_a_batch_mixing_reserve_settle_and_release_answers_each_in_order(
        client: BillingClient, stream: LedgerStream, database_url) -> None:
    account_id = (await client.create_account(credits=10 * PRICE)).account.account_id
    first, second = await stream.batch(reserve(account_id, PRICE, "req-1"),
                                       reserve(account_id, PRICE, "req-2"))

    results = await stream.batch(
        reserve(account_id, PRICE, "req-3"),
        settle(first.reserve.hold_id, PRICE // 2),
        release(second.reserve.hold_id),
        reserve(account_id, PRICE, "req-4"))

    assert [r.WhichOneof("result") for r in results] == ["reserve", "settle", "release",
                                                          "reserve"]
    assert results[1].settle.charged_micro_credits == PRICE // 2
    # Each sees the operations before it, in prices: 10, minus 2 held by the first
    # batch, minus 1 (req-3), plus the unused half of the settled hold ...
    assert results[1].settle.balance_micro_credits == 7 * PRICE + PRICE // 2
    # ... plus the released hold; req-4 then takes 1 again.
    assert results[2].release.balance_micro_credits == 8 * PRICE + PRICE // 2
    view = await client.account(account_id)
    assert sorted(h.request_id for h in view.holds) == ["req-3", "req-4"]
    assert {h.hold_id for h in view.holds} == {results[0].reserve.hold_id,
                                               results[3].reserve.hold_id}
    assert results[0].reserve.expires_at.seconds > 0
    books = await read_books(database_url, account_id)
    assert books.balance == books.ledger_sum == 7 * PRICE + PRICE // 2
    assert books.held == 2 * PRICE
    assert books.holds == 4
    assert books.usage_records == 1
    # grant, four holds, a settle and a release
    assert books.ledger_rows == 7


async def test_a_refused_reserve_writes_nothing_and_its_neighbour_is_applied(
        client: BillingClient, stream: LedgerStream, database_url) -> None:
    poor = (await client.create_account(credits=PRICE - 1)).account.account_id
    funded = (await client.create_account(credits=PRICE)).account.account_id

    refused, placed = await stream.batch(reserve(poor, PRICE, "req-poor"),
                                         reserve(funded, PRICE, "req-funded"))

    refusal = error(refused)
    assert refusal.reason == "INSUFFICIENT_CREDITS"
    assert refusal.metadata == {"required_micro_credits": str(PRICE),
                                "available_micro_credits": str(PRICE - 1)}
    assert placed.reserve.hold_id
    books = await read_books(database_url, poor)
    assert (books.balance, books.held, books.holds, books.ledger_rows) == (PRICE - 1, 0, 0, 1)
    assert books.ledger_sum == books.balance
    books = await read_books(database_url, funded)
    assert (books.balance, books.held, books.holds) == (0, PRICE, 1)
    assert books.ledger_sum == books.balance


async def test_two_reserves_on_one_account_in_one_batch_draw_on_one_balance(
        client: BillingClient, stream: LedgerStream, database_url) -> None:
    account_id = (await client.create_account(credits=PRICE + PRICE // 2)).account.account_id

    fits, too_many = await stream.batch(reserve(account_id, PRICE, "req-a"),
                                        reserve(account_id, PRICE, "req-b"))

    assert fits.reserve.hold_id
    refusal = error(too_many)
    assert refusal.reason == "INSUFFICIENT_CREDITS"
    assert refusal.metadata["available_micro_credits"] == str(PRICE // 2)
    books = await read_books(database_url, account_id)
    assert (books.balance, books.held, books.holds) == (PRICE // 2, PRICE, 1)
    assert books.ledger_sum == books.balance


async def test_closing_unknown_closed_or_overcharged_holds_in_a_batch_is_refused(
        client: BillingClient, stream: LedgerStream, database_url) -> None:
    account_id = (await client.create_account(credits=3 * PRICE)).account.account_id
    held = [r.reserve.hold_id for r in await stream.batch(
        reserve(account_id, PRICE, "req-1"), reserve(account_id, PRICE, "req-2"),
        reserve(account_id, PRICE, "req-3"))]
    await stream.batch(settle(held[0], PRICE))

    results = await stream.batch(
        settle("hold_unknown", PRICE),
        settle(held[0], PRICE),              # settled in the batch before
        release(held[0]),
        settle(held[1], PRICE + 1),          # more than it holds
        settle(held[2], PRICE // 4),
        settle(held[2], PRICE // 4),         # settled just before, in this batch
        release(held[1]))

    reasons = [error(r).reason if r.HasField("error") else r.WhichOneof("result")
               for r in results]
    assert reasons == ["NOT_FOUND", "HOLD_CLOSED", "HOLD_CLOSED", "INVALID_REQUEST", "settle",
                       "HOLD_CLOSED", "release"]
    assert error(results[3]).field == "amount_micro_credits"
    assert "already settled" in error(results[1]).message
    assert results[4].settle.charged_micro_credits == PRICE // 4
    assert results[6].release.balance_micro_credits == 3 * PRICE - PRICE - PRICE // 4
    books = await read_books(database_url, account_id)
    assert books.balance == books.ledger_sum == 3 * PRICE - PRICE - PRICE // 4
    assert books.held == 0
    assert books.usage_records == 2
    # grant, three holds, two settles, one release
    assert books.ledger_rows == 7


async def test_a_batch_over_the_limit_is_refused_whole_and_one_at_the_limit_is_applied(
        client: BillingClient, stream: LedgerStream, database_url) -> None:
    account_id = (await client.create_account(credits=PRICE)).account.account_id
    too_many = [reserve(account_id, 1, "req-over-limit"),
                *(release(f"hold_{index}") for index in range(MAX_BATCH_OPERATIONS))]

    refused = await stream.batch(*too_many)
    at_limit = await stream.batch(*too_many[:MAX_BATCH_OPERATIONS])

    assert {(error(r).reason, error(r).message) for r in refused} == {
        ("INVALID_REQUEST", f"a Ledger batch holds at most {MAX_BATCH_OPERATIONS} operations; "
                            f"this one has {MAX_BATCH_OPERATIONS + 1}")}
    assert at_limit[0].reserve.hold_id
    assert {error(r).reason for r in at_limit[1:]} == {"NOT_FOUND"}
    books = await read_books(database_url, account_id)
    assert (books.balance, books.held, books.holds) == (PRICE - 1, 1, 1)


async def test_a_request_id_repeated_with_another_amount_is_refused_and_writes_nothing(
        client: BillingClient, stream: LedgerStream, database_url) -> None:
    account_id = (await client.create_account(credits=10 * PRICE)).account.account_id

    first, other_amount, retried = await stream.batch(
        reserve(account_id, PRICE, "req-x"), reserve(account_id, 2 * PRICE, "req-x"),
        reserve(account_id, PRICE, "req-x"))
    [later_retry] = await stream.batch(reserve(account_id, PRICE, "req-x"))

    refusal = error(other_amount)
    assert (refusal.reason, refusal.field) == ("INVALID_REQUEST", "request_id")
    assert retried.reserve.hold_id == later_retry.reserve.hold_id == first.reserve.hold_id
    assert retried.reserve.expires_at == first.reserve.expires_at
    books = await read_books(database_url, account_id)
    assert (books.balance, books.held, books.holds, books.ledger_rows) == (
        9 * PRICE, PRICE, 1, 2)
    assert books.ledger_sum == books.balance


async def test_operations_failing_their_checks_are_refused_and_the_rest_applied(
        client: BillingClient, stream: LedgerStream, database_url) -> None:
    account_id = (await client.create_account(credits=2 * PRICE)).account.account_id

    results = await stream.batch(
        reserve(account_id, -1, "req-negative"),
        reserve(account_id, PRICE, "   "),
        pb.LedgerOperation(),
        release(""),
        reserve("acct_unknown", PRICE, "req-unknown"),
        reserve(account_id, PRICE, "req-good"))

    refusals = [(error(r).reason, error(r).field) for r in results[:5]]
    assert refusals == [("INVALID_REQUEST", "amount_micro_credits"),
                        ("INVALID_REQUEST", "request_id"),
                        ("INVALID_REQUEST", "operation"),
                        ("INVALID_REQUEST", "hold_id"),
                        ("NOT_FOUND", None)]
    assert results[5].reserve.hold_id
    books = await read_books(database_url, account_id)
    assert (books.balance, books.holds, books.ledger_rows) == (PRICE, 1, 2)


async def test_batches_in_flight_together_are_answered_by_batch_id(
        client: BillingClient, database_url) -> None:
    account_ids = [(await client.create_account(credits=10 * PRICE)).account.account_id
                   for _ in range(6)]
    stream = LedgerStream(client)
    # Batch i holds i + 1 reserves on account i; all are sent before any reply is read.
    sent = [await stream.send(*(reserve(account_id, PRICE, f"req-{i}-{j}")
                                for j in range(i + 1)))
            for i, account_id in enumerate(account_ids)]
    # Closing our side at once: the server still answers every batch in flight.
    await stream.close()

    for i, (reply, account_id) in enumerate(zip(sent, account_ids, strict=True)):
        results = reply.result().results
        assert len(results) == i + 1
        view = await client.account(account_id)
        assert {h.hold_id: h.request_id for h in view.holds} == {
            r.reserve.hold_id: f"req-{i}-{j}" for j, r in enumerate(results)}
        books = await read_books(database_url, account_id)
        assert books.balance == books.ledger_sum == (10 - (i + 1)) * PRICE


async def test_a_failing_batch_is_rolled_back_and_every_operation_gets_internal(
        client: BillingClient, stream: LedgerStream, database_url, caplog) -> None:
    caplog.set_level(logging.ERROR, logger="quantized.billing.ledger")
    caplog.handler.setFormatter(JsonFormatter())
    account_id = (await client.create_account(credits=3 * PRICE)).account.account_id
    [held] = await stream.batch(reserve(account_id, PRICE, "req-1"))
    # Our own failure, from the database: the settle's usage record has no table.
    await execute(database_url, "ALTER TABLE usage_records RENAME TO usage_records_away")

    results = await stream.batch(reserve(account_id, PRICE, "req-2"),
                                 settle(held.reserve.hold_id, PRICE))

    failures = [error(r) for r in results]
    assert {f.reason for f in failures} == {"INTERNAL"}
    assert len({f.message for f in failures}) == 1
    message = failures[0].message
    assert message.startswith("internal error (request id req_")
    request_id = message.removeprefix("internal error (request id ").removesuffix(")")
    assert f'"request_id": "{request_id}"' in caplog.text
    assert "ledger batch failed" in caplog.text
    assert "usage_records" not in message
    await execute(database_url, "ALTER TABLE usage_records_away RENAME TO usage_records")
    # Nothing of the batch stayed, not even the reserve before the failure.
    books = await read_books(database_url, account_id)
    assert (books.balance, books.held, books.holds) == (2 * PRICE, PRICE, 1)
    assert books.ledger_sum == books.balance

    # The stream goes on.
    retried = await stream.batch(reserve(account_id, PRICE, "req-2"),
                                 settle(held.reserve.hold_id, PRICE))
    assert [r.WhichOneof("result") for r in retried] == ["reserve", "settle"]


async def test_concurrent_batches_on_several_streams_never_overdraw(
        start_billing: StartBilling, database_url) -> None:
    """Issue 5's property through the stream: 240 reserves in batches of 1 to 8,
    all in flight at once on four streams through two servers sharing the
    database, at an account funded for exactly 60."""
    first, second = await start_billing(), await start_billing()
    account_id = (await first.create_account(credits=AFFORDABLE * PRICE)).account.account_id
    streams = [LedgerStream(first), LedgerStream(second), LedgerStream(first),
               LedgerStream(second)]
    shuffle = random.Random(5)
    batches: list[list[pb.LedgerOperation]] = []
    index = 0
    while index < ATTEMPTS:
        size = min(shuffle.randint(1, 8), ATTEMPTS - index)
        batches.append([reserve(account_id, PRICE, f"req-{index + j}") for j in range(size)])
        index += size

    async def run(batch_number: int, batch: list[pb.LedgerOperation]) -> list[pb.LedgerResult]:
        return await streams[batch_number % len(streams)].batch(*batch)

    replies = await asyncio.gather(*(run(n, b) for n, b in enumerate(batches)))
    results = [result for reply in replies for result in reply]
    assert len(results) == ATTEMPTS
    holds = [r.reserve.hold_id for r in results if r.HasField("reserve")]
    refusals = [error(r) for r in results if r.HasField("error")]
    assert len(holds) == len(set(holds)) == AFFORDABLE
    assert {e.reason for e in refusals} == {"INSUFFICIENT_CREDITS"}
    books = await read_books(database_url, account_id)
    assert (books.balance, books.held, books.holds) == (0, AFFORDABLE * PRICE, AFFORDABLE)
    assert books.ledger_sum == books.balance

    # Settling them all in concurrent batches, half in full and half flagged.
    settles = [settle(hold_id, PRICE if i % 2 else 0) for i, hold_id in enumerate(holds)]
    settled = await asyncio.gather(*(run(n, settles[n::6]) for n in range(6)))
    charged = [r.settle.charged_micro_credits for reply in settled for r in reply]
    assert len(charged) == AFFORDABLE
    assert sum(charged) == (AFFORDABLE // 2) * PRICE
    for stream in streams:
        await stream.close()
    books = await read_books(database_url, account_id)
    assert books.balance == books.ledger_sum == (AFFORDABLE // 2) * PRICE
    assert books.held == 0
    assert books.usage_records == AFFORDABLE



@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_batch_that_loses_a_deadlock_is_run_again(
        client: BillingClient, postgres_url, caplog) -> None:
    """Another transaction takes the account's lock, waits for the batch's hold
    lock, and so closes a circle: PostgreSQL aborts the batch's transaction,
    which is rolled back and run again once the other one has committed."""
    caplog.set_level(logging.INFO, logger="quantized.billing.postgres")
    # The error's name is a field of the log line, which only the JSON lines show.
    caplog.handler.setFormatter(JsonFormatter())
    account_id = (await client.create_account(credits=2 * PRICE)).account.account_id
    stream = LedgerStream(client)
    [held] = await stream.batch(reserve(account_id, PRICE, "req-1"))
    hold_id = held.reserve.hold_id
    other = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        # The batch's backend must be the one that detects the circle.
        await other.execute("SET deadlock_timeout = '60s'")
        other_transaction = other.transaction()
        await other_transaction.start()
        await other.execute("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE", account_id)

        reply = await stream.send(settle(hold_id, PRICE // 2))
        # The batch has its hold lock and now waits for the account.
        while not await other.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"):
            await asyncio.sleep(0.01)
        # Waits until PostgreSQL aborts the batch's transaction, which frees the hold.
        await other.execute("SELECT 1 FROM holds WHERE id = $1 FOR UPDATE", hold_id)
        await other_transaction.commit()
        [result] = (await reply).results
    finally:
        await other.close()
    await stream.close()

    assert result.settle.charged_micro_credits == PRICE // 2
    assert "DeadlockDetectedError" in caplog.text
    books = await read_books(postgres_url, account_id)
    assert books.balance == books.ledger_sum == 2 * PRICE - PRICE // 2
    assert (books.held, books.usage_records) == (0, 1)
