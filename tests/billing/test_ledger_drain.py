"""Billing stopping with a Ledger stream open, through real billing servers: the
caller is told, every batch it sends until it closes its side is still applied
and answered, and the stream then ends OK, so the stop does not wait out its
grace period; a new stream reaches the billing that took over."""

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


async def test_stopping_tells_the_caller_and_answers_every_batch_until_it_closes_its_side(
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
    started = time.monotonic()
    # As on SIGTERM (serve_until_signal); the fixture stops the rest.
    stopping = asyncio.get_running_loop().create_task(running.server.stop(GRACE_SECONDS))
    await stream.draining.wait()
    # Sent after the notice, as by a caller that has not read it yet: still applied.
    late = await stream.send(reserve(account_id, PRICE, "req-late"))
    gate.set()

    [answered] = (await in_flight).results
    [answered_late] = (await late).results
    assert answered.reserve.hold_id and answered_late.reserve.hold_id
    await stream.close()
    await stopping
    assert time.monotonic() - started < GRACE_SECONDS
    books = await read_books(database_url, account_id)
    assert (books.balance, books.held, books.holds) == (8 * PRICE, 2 * PRICE, 2)

    # A new stream over the same channel reaches the billing that took over.
    again = LedgerStream(client)
    [placed] = await again.batch(reserve(account_id, PRICE, "req-after"))
    await again.close()
    view = await taking_over.account(account_id)
    assert {h.hold_id: h.request_id for h in view.holds} == {
        answered.reserve.hold_id: "req-in-flight", answered_late.reserve.hold_id: "req-late",
        placed.reserve.hold_id: "req-after"}
    assert [r.getMessage() for r in caplog.records if r.name.startswith("grpc")] == []


async def test_a_caller_that_never_closes_its_side_is_cut_when_the_grace_period_ends(
        start_billing: StartBilling) -> None:
    client = await start_billing()
    account_id = (await client.create_account(credits=10 * PRICE)).account.account_id
    stream = LedgerStream(client)
    await stream.batch(reserve(account_id, PRICE, "req-before"))
    grace_seconds = 0.5
    started = time.monotonic()

    await client.running.server.stop(grace_seconds)

    assert stream.draining.is_set()
    assert grace_seconds <= time.monotonic() - started < GRACE_SECONDS
    with pytest.raises(grpc.aio.AioRpcError) as cut:
        await stream.code()
    assert cut.value.code() is grpc.StatusCode.UNAVAILABLE
