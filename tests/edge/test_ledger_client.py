"""The edge's batched Ledger stream client against a fake billing on a real gRPC server."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest

from quantized.billing.v1 import billing_pb2, billing_pb2_grpc
from quantized_runtime.call_stream import StreamBroken
from quantized_runtime.channels import open_channel
from quantized_runtime.errors import Reason, ServiceError
from quantized_runtime.request_context import current_request_id

from edge.ledger_client import LedgerClient
from tests.edge.fakes import Peers, start_fake_peers
from tests.polling import eventually

TIMEOUT = 5.0
# Long enough that a stop which waited it out would show.
GRACE_SECONDS = 30.0


@pytest.fixture
async def ledger(peers: Peers) -> AsyncIterator[LedgerClient]:
    channel = open_channel(peers.address)
    client = LedgerClient(billing_pb2_grpc.BillingServiceStub(channel))
    try:
        yield client
    finally:
        await client.close()
        await channel.close()


def reserve(amount: int, request_id: str, account_id: str = "acct_valid") -> billing_pb2.ReserveRequest:
    return billing_pb2.ReserveRequest(account_id=account_id, amount_micro_credits=amount, request_id=request_id)


async def test_a_lone_operation_goes_at_once_in_its_own_batch(peers: Peers, ledger: LedgerClient) -> None:
    hold = await ledger.reserve(reserve(100, "r1"), TIMEOUT)
    settled = await ledger.settle(billing_pb2.SettleRequest(hold_id=hold.hold_id, amount_micro_credits=40), TIMEOUT)
    assert settled.charged_micro_credits == 40
    batches = peers.billing.requests("Ledger")
    assert [len(batch.operations) for batch in batches] == [1, 1]


async def test_concurrent_operations_share_batches_and_each_gets_its_own_answer(
        peers: Peers, ledger: LedgerClient) -> None:
    peers.billing.ledger_delay_seconds = 0.02
    amounts = list(range(1, 41))
    holds = await asyncio.gather(*(ledger.reserve(reserve(a, f"r{a}"), TIMEOUT) for a in amounts))
    assert len({hold.hold_id for hold in holds}) == 40
    held = {hold.hold_id: amount for hold, amount in zip(holds, amounts, strict=True)}
    assert {hold_id: peers.billing.holds[hold_id][1] for hold_id in held} == held
    batches = peers.billing.requests("Ledger")
    assert sum(len(batch.operations) for batch in batches) == 40
    assert len(batches) < 40
    assert len({batch.batch_id for batch in batches}) == len(batches)


async def test_a_refused_operation_fails_alone_with_its_reason(peers: Peers, ledger: LedgerClient) -> None:
    peers.billing.ledger_delay_seconds = 0.02
    results = await asyncio.gather(
        ledger.reserve(reserve(5, "ok-1"), TIMEOUT),
        ledger.reserve(reserve(50, "too-much", account_id="acct_poor"), TIMEOUT),
        ledger.reserve(reserve(5, "ok-2"), TIMEOUT),
        return_exceptions=True)
    assert isinstance(results[1], ServiceError) and results[1].reason is Reason.INSUFFICIENT_CREDITS
    assert all(isinstance(result, billing_pb2.ReserveResponse) for result in (results[0], results[2]))


async def test_a_reserve_answered_after_its_caller_gave_up_is_released(peers: Peers, ledger: LedgerClient) -> None:
    peers.billing.ledger_delay_seconds = 0.3
    balance = peers.billing._account("acct_valid").balance
    with pytest.raises(ServiceError) as raised:
        await ledger.reserve(reserve(1_000, "slow"), 0.05)
    assert raised.value.reason is Reason.SERVICE_UNAVAILABLE and "did not answer" in raised.value.message
    peers.billing.ledger_delay_seconds = 0.0
    await eventually(lambda: peers.billing.count("Release") == 1)
    assert peers.billing.holds == {} and peers.billing._account("acct_valid").balance == balance


async def test_a_broken_stream_fails_what_was_in_flight_and_the_next_batch_reopens_it(
        peers: Peers, ledger: LedgerClient) -> None:
    await ledger.reserve(reserve(1, "before"), TIMEOUT)
    peers.billing.ledger_abort_after_batches = 1
    with pytest.raises(ServiceError) as raised:
        await ledger.reserve(reserve(1, "lost"), TIMEOUT)
    assert isinstance(raised.value, StreamBroken)
    assert raised.value.reason is Reason.SERVICE_UNAVAILABLE and "UNAVAILABLE" in raised.value.message
    hold = await ledger.reserve(reserve(1, "after"), TIMEOUT)
    assert hold.hold_id in peers.billing.holds


async def test_a_closed_client_refuses_new_operations(ledger: LedgerClient) -> None:
    await ledger.close()
    with pytest.raises(ServiceError) as raised:
        await ledger.reserve(reserve(1, "late"), TIMEOUT)
    assert raised.value.reason is Reason.SERVICE_UNAVAILABLE


@pytest.mark.parametrize("successor", [True, False], ids=["another billing takes over", "no billing left"])
async def test_batches_sent_as_billing_stops_are_answered_there_and_later_ones_go_on_a_new_stream(
        peers: Peers, ledger: LedgerClient, successor: bool) -> None:
    await ledger.reserve(reserve(1, "opens"), TIMEOUT)
    peers.billing.ledger_gate = asyncio.Event()
    loop = asyncio.get_running_loop()
    in_flight = loop.create_task(ledger.reserve(reserve(2, "in-flight"), TIMEOUT))
    await eventually(lambda: peers.billing.count("Ledger") == 2)
    # Out on the stream, not read yet, when billing starts to stop.
    unread = loop.create_task(ledger.reserve(reserve(3, "unread"), TIMEOUT))
    await eventually(lambda: len(ledger._in_flight) == 2)
    # A second billing on the same port: new connections reach it once the first stops listening.
    taking_over = await start_fake_peers(peers.address) if successor else None
    started = time.monotonic()
    stopping = loop.create_task(peers.server.stop(GRACE_SECONDS))
    try:
        # The edge heard that billing is stopping: its next batch opens a new stream.
        await eventually(lambda: ledger._stream is None)
        after = loop.create_task(ledger.reserve(reserve(4, "after"), TIMEOUT))
        peers.billing.ledger_gate.set()

        assert (await in_flight).hold_id and (await unread).hold_id
        [outcome] = await asyncio.gather(after, return_exceptions=True)
        await stopping
        assert time.monotonic() - started < GRACE_SECONDS
        assert [op.request_id for op in peers.billing.requests("Reserve")] == ["opens", "in-flight", "unread"]
        if taking_over is not None:
            assert outcome.hold_id in taking_over.billing.holds
            assert [op.request_id for op in taking_over.billing.requests("Reserve")] == ["after"]
        else:
            assert isinstance(outcome, ServiceError) and outcome.reason is Reason.SERVICE_UNAVAILABLE
            assert outcome.message.startswith("ledger stream to billing failed")
    finally:
        if taking_over is not None:
            await taking_over.server.stop(None)


async def test_a_stream_that_billing_drains_at_once_still_answers_what_was_sent(
        peers: Peers, ledger: LedgerClient) -> None:
    # Every stream is told at once, as by a billing that is stopping.
    peers.drain.drain()

    assert (await ledger.reserve(reserve(1, "first"), TIMEOUT)).hold_id
    await eventually(lambda: peers.billing.ledger_streams_closed == 1)
    assert (await ledger.reserve(reserve(2, "second"), TIMEOUT)).hold_id

    assert [op.request_id for op in peers.billing.requests("Reserve")] == ["first", "second"]
    assert peers.billing.ledger_streams_opened == 2
    await eventually(lambda: peers.billing.ledger_streams_closed == 2)


async def test_no_operation_is_lost_or_applied_twice_when_billing_stops_under_load(
        peers: Peers, ledger: LedgerClient) -> None:
    """Writes race the stop: with grpc.aio a write that meets the end of its
    stream turns the stream's status into INTERNAL (grpc/grpc#36066), which is
    why billing never ends a stream the edge may still write to."""
    # The stream opens on the first billing before a second one shares its port.
    await ledger.reserve(reserve(1, "opens"), TIMEOUT)
    taking_over = await start_fake_peers(peers.address)
    request_ids = [f"req-{index}" for index in range(300)]
    loop = asyncio.get_running_loop()
    try:
        reserves = []
        for index, request_id in enumerate(request_ids):
            reserves.append(loop.create_task(ledger.reserve(reserve(1, request_id), TIMEOUT)))
            if index == 100:
                stopping = loop.create_task(peers.server.stop(GRACE_SECONDS))
            await asyncio.sleep(0.0005)
        answers = await asyncio.gather(*reserves)
        await stopping

        assert all(answer.hold_id for answer in answers)
        first = [op.request_id for op in peers.billing.requests("Reserve")]
        second = [op.request_id for op in taking_over.billing.requests("Reserve")]
        assert len(first) > 1 and second
        assert sorted(first + second) == sorted(["opens", *request_ids])
    finally:
        await taking_over.server.stop(None)


class _RequestIds(logging.Handler):
    """The request id in context when each record is emitted (what the JSON log shows)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(current_request_id.get())


async def test_stream_tasks_do_not_carry_the_request_id_of_the_first_caller(
        peers: Peers, ledger: LedgerClient) -> None:
    token = current_request_id.set("req_first")
    try:
        await ledger.reserve(reserve(1, "first"), TIMEOUT)
    finally:
        current_request_id.reset(token)
    peers.billing.ledger_abort_after_batches = 1
    handler = _RequestIds()
    logger = logging.getLogger("quantized.edge.ledger")
    logger.addHandler(handler)
    try:
        with pytest.raises(ServiceError):
            await ledger.reserve(reserve(1, "lost"), TIMEOUT)
    finally:
        logger.removeHandler(handler)
    assert handler.seen and "req_first" not in handler.seen
