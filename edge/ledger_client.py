"""Money operations through billing's Ledger stream, batched.

A unary gRPC call costs both ends more CPU than a message on an open stream,
and each billing transaction a commit. So the edge keeps one long-lived Ledger stream to
billing and sends the money operations of its concurrent requests together:
an operation submitted while MAX_BATCHES_IN_FLIGHT batches are unanswered waits
and leaves with the next batch ("natural batching"); Charges, which a response
waits to see written, go out at the end of the loop's turn whatever is in
flight, with everything submitted in that turn. One request alone goes at once,
with no timer and no added latency; under load, many requests share one
message and one database transaction.

The stream's lifecycle (opening, the drain notice, failing the batches of a
stream that breaks) is the shared runtime's (quantized_runtime.call_stream);
a batch is one call on it. A Reserve or AcquireLease that succeeds after its
caller gave up (timeout, cancellation) is released or returned straight away,
so no credits stay held until they expire.

A Charge is different from every other operation: its request has already
delivered (or is about to deliver) images, so it must reach billing whatever
happens to a stream. `send_charge` returns once it is queued; the caller waits
only until it is written. A Charge written to a stream that then breaks may
have been applied, so it is sent again on the next stream, and again, until
billing answers it (billing applies a Charge once per account and request id).
A Charge that never reached a stream fails back to its caller, who has not
answered its client yet and charges nothing. Charges still unanswered when the
client closes are money lost, logged at ERROR one by one.

When tracing is on, each operation has a client span until billing answers it,
and carries that span's traceparent: a batch carries many requests' operations.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from quantized.billing.v1 import billing_pb2, billing_pb2_grpc
from quantized_runtime import tracing
from quantized_runtime.call_stream import CallStreamClient, fail_waiter
from quantized_runtime.errors import Reason, ServiceError, from_call_error

log = logging.getLogger("quantized.edge.ledger")

MAX_BATCHES_IN_FLIGHT = 2
MAX_OPERATIONS_PER_BATCH = 256
# A Charge whose fate a broken stream left unknown is sent again after this, doubling up to the cap.
CHARGE_RESEND_FIRST_SECONDS = 0.05
CHARGE_RESEND_MAX_SECONDS = 1.0
# Billing's answers that mean "not applied, try again" (a batch rolled back, a stream lost).
_CHARGE_RETRY_REASONS = frozenset({Reason.INTERNAL, Reason.SERVICE_UNAVAILABLE})
# An operation's client span is named for the stream and the operation ("... charge").
LEDGER_SPAN = "quantized.billing.v1.BillingService/Ledger"


class _Entry:
    __slots__ = ("operation", "waiter")

    def __init__(self, operation: billing_pb2.LedgerOperation, waiter: asyncio.Future[Any]) -> None:
        self.operation = operation
        self.waiter = waiter


class PendingCharge(_Entry):
    """A Charge on its way: `written` resolves once it is on a stream (its first
    write), `waiter` with billing's ChargeResponse."""

    __slots__ = ("written", "resends")

    def __init__(self, request: billing_pb2.ChargeRequest) -> None:
        loop = asyncio.get_running_loop()
        super().__init__(billing_pb2.LedgerOperation(charge=request), loop.create_future())
        self.written: asyncio.Future[None] = loop.create_future()
        self.resends = 0

    @property
    def request(self) -> billing_pb2.ChargeRequest:
        return self.operation.charge


class _Batch:
    __slots__ = ("entries", "written")

    def __init__(self, entries: list[_Entry], written: asyncio.Future[None]) -> None:
        self.entries = entries
        self.written = written


class LedgerClient(CallStreamClient[billing_pb2.LedgerRequest, billing_pb2.LedgerResponse, _Batch]):
    def __init__(self, stub: billing_pb2_grpc.BillingServiceStub) -> None:
        super().__init__(stub.Ledger, stream="ledger stream", peer="billing", logger=log)
        self._waiting: list[_Entry] = []
        self._send_scheduled = False
        # Every Charge billing has not answered yet.
        self._charges: set[PendingCharge] = set()

    async def reserve(self, request: billing_pb2.ReserveRequest, timeout: float) -> billing_pb2.ReserveResponse:
        return await self._submit(billing_pb2.LedgerOperation(reserve=request), timeout)

    async def settle(self, request: billing_pb2.SettleRequest, timeout: float) -> billing_pb2.SettleResponse:
        return await self._submit(billing_pb2.LedgerOperation(settle=request), timeout)

    async def release(self, request: billing_pb2.ReleaseRequest, timeout: float) -> billing_pb2.ReleaseResponse:
        return await self._submit(billing_pb2.LedgerOperation(release=request), timeout)

    async def acquire_lease(self, request: billing_pb2.AcquireLeaseRequest,
                            timeout: float) -> billing_pb2.LeaseResponse:
        return await self._submit(billing_pb2.LedgerOperation(acquire_lease=request), timeout)

    async def extend_lease(self, request: billing_pb2.ExtendLeaseRequest,
                           timeout: float) -> billing_pb2.LeaseResponse:
        return await self._submit(billing_pb2.LedgerOperation(extend_lease=request), timeout)

    async def return_lease(self, request: billing_pb2.ReturnLeaseRequest,
                           timeout: float) -> billing_pb2.ReturnLeaseResponse:
        return await self._submit(billing_pb2.LedgerOperation(return_lease=request), timeout)

    def send_charge(self, request: billing_pb2.ChargeRequest) -> PendingCharge:
        """Queue a Charge; await its `written`, then (if wanted) its `waiter`."""
        self._refuse_if_closed()
        charge = PendingCharge(request)
        _traced(charge)
        self._charges.add(charge)
        charge.waiter.add_done_callback(lambda waiter: self._answered_charge(charge, waiter))
        self._enqueue(charge)
        return charge

    def _answered_charge(self, charge: PendingCharge, waiter: asyncio.Future[Any]) -> None:
        self._charges.discard(charge)
        if not waiter.cancelled():
            waiter.exception()  # its failure was logged or handed to the caller through `written`

    def withdraw(self, charge: PendingCharge) -> bool:
        """Take back a Charge not yet put in a batch (its caller gave up): True
        when billing will never see it."""
        if charge not in self._waiting:
            return False
        self._waiting.remove(charge)
        self._charges.discard(charge)
        charge.waiter.cancel()
        charge.written.cancel()
        return True

    async def flush(self, timeout: float) -> bool:
        """Wait until billing has answered every Charge sent so far; False if some are left."""
        pending = [charge.waiter for charge in self._charges]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        return all(waiter.done() for waiter in pending)

    async def close(self) -> None:
        for charge in list(self._charges):
            _log_lost(charge, "the edge stopped before billing answered it")
        closing = self._closing()
        for charge in list(self._charges):
            fail_waiter(charge.written, closing)
            fail_waiter(charge.waiter, closing)
        await super().close()
        for entry in self._waiting:
            fail_waiter(entry.waiter, closing)
        self._waiting.clear()

    async def _submit(self, operation: billing_pb2.LedgerOperation, timeout: float) -> Any:
        self._refuse_if_closed()
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        entry = _Entry(operation, waiter)
        _traced(entry)
        self._enqueue(entry)
        # A caller that gives up leaves its operation in its batch: an answered
        # Reserve or AcquireLease is then given back (_deliver).
        return await self._wait(waiter, timeout)

    def _enqueue(self, entry: _Entry) -> None:
        if self._closed:
            return
        self._waiting.append(entry)
        self._send_soon()

    def _send_soon(self) -> None:
        """Send what fits once the callers of this turn of the loop have all
        submitted, so that operations submitted together share a batch."""
        if not self._send_scheduled:
            self._send_scheduled = True
            asyncio.get_running_loop().call_soon(self._send_waiting)

    def _send_waiting(self) -> None:
        """A Charge does not wait for a batch to be answered: its request waits
        for it to be written, and billing's latency must stay off that path."""
        self._send_scheduled = False
        loop = asyncio.get_running_loop()
        while not self._closed and self._waiting and (
                self._calls_in_flight < MAX_BATCHES_IN_FLIGHT
                or any(isinstance(entry, PendingCharge) for entry in self._waiting)):
            entries = self._waiting[:MAX_OPERATIONS_PER_BATCH]
            del self._waiting[:MAX_OPERATIONS_PER_BATCH]
            batch = _Batch(entries, loop.create_future())
            batch.written.add_done_callback(lambda _, entries=entries: _charges_written(entries))
            batch_id = self._new_call_id()
            self._start(batch_id, batch, billing_pb2.LedgerRequest(
                batch_id=batch_id, operations=[entry.operation for entry in entries]), batch.written)

    def _call_id(self, answer: billing_pb2.LedgerResponse) -> int:
        return answer.batch_id

    def _answered(self, batch: _Batch, answer: billing_pb2.LedgerResponse) -> bool:
        if len(answer.results) != len(batch.entries):
            mismatch = ServiceError(Reason.INTERNAL, "billing answered a batch with the wrong number of results")
            for entry in batch.entries:
                self._lost(entry, mismatch)
        else:
            for entry, result in zip(batch.entries, answer.results, strict=True):
                self._deliver(entry, result)
        self._send_soon()
        return True

    def _failed(self, batch: _Batch, failure: ServiceError) -> None:
        for entry in batch.entries:
            self._lost(entry, failure)
        self._send_soon()

    def _lost(self, entry: _Entry, failure: ServiceError) -> None:
        """An operation left without an answer. A Charge that was ever written
        may have been applied: it goes again; any other operation fails."""
        if isinstance(entry, PendingCharge) and entry.written.done() and not self._closed:
            self._send_again(entry)
            return
        if isinstance(entry, PendingCharge):
            fail_waiter(entry.written, failure)
        fail_waiter(entry.waiter, failure)

    def _send_again(self, charge: PendingCharge) -> None:
        delay = min(CHARGE_RESEND_FIRST_SECONDS * 2 ** charge.resends, CHARGE_RESEND_MAX_SECONDS)
        charge.resends += 1
        asyncio.get_running_loop().call_later(delay, self._enqueue, charge)

    def _unmatched(self, answer: billing_pb2.LedgerResponse) -> None:
        log.error("ledger answer for an unknown batch", extra={"fields": {"batch_id": answer.batch_id}})

    def _deliver(self, entry: _Entry, result: billing_pb2.LedgerResult) -> None:
        kind = result.WhichOneof("result")
        if kind == "error":
            error = from_call_error(result.error)
            if isinstance(entry, PendingCharge):
                if error.reason in _CHARGE_RETRY_REASONS:
                    self._send_again(entry)
                    return
                _log_lost(entry, f"billing refused it: {error.reason.value}: {error.message}")
            fail_waiter(entry.waiter, error)
            return
        value = getattr(result, kind) if kind else None
        if entry.waiter.done():
            if kind == "reserve":
                self._give_back(billing_pb2.LedgerOperation(
                    release=billing_pb2.ReleaseRequest(hold_id=value.hold_id)))
            elif kind == "acquire_lease":
                self._give_back(billing_pb2.LedgerOperation(
                    return_lease=billing_pb2.ReturnLeaseRequest(lease_id=value.lease_id)))
            return
        if kind != entry.operation.WhichOneof("operation"):
            entry.waiter.set_exception(ServiceError(Reason.INTERNAL, "billing answered with the wrong result"))
            return
        entry.waiter.set_result(value)

    def _give_back(self, operation: billing_pb2.LedgerOperation) -> None:
        """The caller stopped waiting for this hold or lease: give the credits back now."""
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        waiter.add_done_callback(_log_failed_give_back)
        self._enqueue(_Entry(operation, waiter))


def _traced(entry: _Entry) -> None:
    """When tracing is on: a client span for the operation, from now until billing
    answers it (or the caller stops waiting), its traceparent in the operation
    (or that of the current span of a trace not sampled, so billing drops it too)."""
    if not tracing.enabled():
        return
    span = tracing.start_client_span(f"{LEDGER_SPAN} {entry.operation.WhichOneof('operation')}",
                                     tracing.GRPC_ATTRIBUTES)
    entry.operation.traceparent = tracing.traceparent(span)
    tracing.finish_when_done(span, entry.waiter)


def _charges_written(entries: list[_Entry]) -> None:
    for entry in entries:
        if isinstance(entry, PendingCharge) and not entry.written.done():
            entry.written.set_result(None)


def _log_lost(charge: PendingCharge, why: str) -> None:
    request = charge.request
    log.error("charge lost: money owed that billing will not record", extra={"fields": {
        "account_id": request.account_id, "charge_request_id": request.request_id,
        "lease_id": request.lease_id, "micro_credits": request.amount_micro_credits, "detail": why}})


def _log_failed_give_back(waiter: asyncio.Future[Any]) -> None:
    if not waiter.cancelled() and waiter.exception() is not None:
        # The hold or lease expires on its own and the reaper returns the credits.
        log.warning("could not give back an abandoned hold or lease",
                    extra={"fields": {"detail": str(waiter.exception())}})
