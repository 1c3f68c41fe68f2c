"""Billing stopping with a Ledger stream open, through real billing servers: the
stream reads no further batch, answers the ones it read and ends with status OK,
so the stop does not wait out its grace period; a batch it did not read wrote
nothing, and sent again on a new stream it reaches the billing that took over."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import grpc
import pytest

from .conftest import StartBilling, read_books
from .test_ledger_stream import PRICE, LedgerStream, reserve

# Long enough that a stop which waited it out would show.
GRACE_SECONDS = 30.0


async def test_stopping_answers_the_batch_in_flight_and_leaves_a_later_one_unread(
        start_billing: StartBilling, database_url: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="grpc")
    client = await start_billing()
    running = client.running
    account_id = (await client.create_account(credits=10 * PRICE)).account.account_id
    entered, gate = asyncio.Event(), asyncio.Event()
    apply_batch = running.billing.apply_batch

    async def held(operations: Any) -> Any:
        entered.set()
        await gate.wait()
        return await apply_batch(operations)

    monkeypatch.setattr(running.billing, "apply_batch", held)
    stream = LedgerStream(client)
    in_flight = await stream.send(reserve(account_id, PRICE, "req-in-flight"))
    await entered.wait()
    # A second billing on the same port: new connections reach it once the first stops listening.
    taking_over = await start_billing(listen=f"127.0.0.1:{running.port}")
    drained = asyncio.Event()
    running.server.drainers += (drained.set,)
    started = time.monotonic()
    # As on SIGTERM (serve_until_signal); the fixture stops the rest.
    stopping = asyncio.get_running_loop().create_task(running.server.stop(GRACE_SECONDS))
    await drained.wait()
    late = await stream.send(reserve(account_id, PRICE, "req-late"))
    gate.set()

    [answered] = (await in_flight).results
    assert answered.reserve.hold_id
    with pytest.raises(AssertionError, match="unanswered"):
        await late
    assert await stream.code() == grpc.StatusCode.OK
    await stopping
    assert time.monotonic() - started < GRACE_SECONDS
    books = await read_books(database_url, account_id)
    assert (books.balance, books.held, books.holds) == (9 * PRICE, PRICE, 1)

    # Sent again on a new stream over the same channel, it reaches the billing that took over.
    again = LedgerStream(client)
    [placed] = await again.batch(reserve(account_id, PRICE, "req-late"))
    await again.close()
    view = await taking_over.account(account_id)
    assert {h.hold_id: h.request_id for h in view.holds} == {
        answered.reserve.hold_id: "req-in-flight", placed.reserve.hold_id: "req-late"}
    # Cancelling the stream's pending read left grpc.aio nothing to complain about.
    assert [r.getMessage() for r in caplog.records if r.name.startswith("grpc")] == []
