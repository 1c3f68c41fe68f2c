"""Reserve, Settle and Release through billing's Ledger stream, batched.

A unary gRPC call costs both ends more CPU than a message on an open stream,
and each billing transaction a commit. So the edge keeps one long-lived Ledger stream to
billing and sends the money operations of its concurrent requests together:
an operation submitted while MAX_BATCHES_IN_FLIGHT batches are unanswered waits
and leaves with the next batch ("natural batching"). One request alone goes at
once, with no timer and no added latency; under load, many requests share one
message and one database transaction.

The stream's lifecycle (opening, the drain notice, failing the batches of a
stream that breaks) is the shared runtime's (quantized_runtime.call_stream);
a batch is one call on it. A Reserve that succeeds after its caller gave up
(timeout, cancellation) is released straight away, so no credits stay held
until the hold expires.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from quantized.billing.v1 import billing_pb2, billing_pb2_grpc
from quantized_runtime.call_stream import CallStreamClient, fail_waiter
from quantized_runtime.errors import Reason, ServiceError, from_call_error

log = logging.getLogger("quantized.edge.ledger")

MAX_BATCHES_IN_FLIGHT = 2
MAX_OPERATIONS_PER_BATCH = 256


class _Entry:
    __slots__ = ("operation", "waiter")

    def __init__(self, operation: billing_pb2.LedgerOperation, waiter: asyncio.Future[Any]) -> None:
        self.operation = operation
        self.waiter = waiter


Batch = list[_Entry]


class LedgerClient(CallStreamClient[billing_pb2.LedgerRequest, billing_pb2.LedgerResponse, Batch]):
    def __init__(self, stub: billing_pb2_grpc.BillingServiceStub) -> None:
        super().__init__(stub.Ledger, stream="ledger stream", peer="billing", logger=log)
        self._waiting: list[_Entry] = []
        self._send_scheduled = False

    async def reserve(self, request: billing_pb2.ReserveRequest, timeout: float) -> billing_pb2.ReserveResponse:
        return await self._submit(billing_pb2.LedgerOperation(reserve=request), timeout)

    async def settle(self, request: billing_pb2.SettleRequest, timeout: float) -> billing_pb2.SettleResponse:
        return await self._submit(billing_pb2.LedgerOperation(settle=request), timeout)

    async def release(self, request: billing_pb2.ReleaseRequest, timeout: float) -> billing_pb2.ReleaseResponse:
        return await self._submit(billing_pb2.LedgerOperation(release=request), timeout)

    async def close(self) -> None:
        await super().close()
        closing = self._closing()
        for entry in self._waiting:
            fail_waiter(entry.waiter, closing)
        self._waiting.clear()

    async def _submit(self, operation: billing_pb2.LedgerOperation, timeout: float) -> Any:
        self._refuse_if_closed()
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._enqueue(_Entry(operation, waiter))
        # A caller that gives up leaves its operation in its batch: an answered
        # Reserve is then released (_deliver).
        return await self._wait(waiter, timeout)

    def _enqueue(self, entry: _Entry) -> None:
        self._waiting.append(entry)
        self._send_soon()

    def _send_soon(self) -> None:
        """Send what fits once the callers of this turn of the loop have all
        submitted, so that operations submitted together share a batch."""
        if not self._send_scheduled:
            self._send_scheduled = True
            asyncio.get_running_loop().call_soon(self._send_waiting)

    def _send_waiting(self) -> None:
        self._send_scheduled = False
        while not self._closed and self._waiting and self._calls_in_flight < MAX_BATCHES_IN_FLIGHT:
            batch = self._waiting[:MAX_OPERATIONS_PER_BATCH]
            del self._waiting[:MAX_OPERATIONS_PER_BATCH]
            batch_id = self._new_call_id()
            self._start(batch_id, batch, billing_pb2.LedgerRequest(
                batch_id=batch_id, operations=[entry.operation for entry in batch]))

    def _call_id(self, answer: billing_pb2.LedgerResponse) -> int:
        return answer.batch_id

    def _answered(self, batch: Batch, answer: billing_pb2.LedgerResponse) -> bool:
        if len(answer.results) != len(batch):
            mismatch = ServiceError(Reason.INTERNAL, "billing answered a batch with the wrong number of results")
            for entry in batch:
                fail_waiter(entry.waiter, mismatch)
        else:
            for entry, result in zip(batch, answer.results, strict=True):
                self._deliver(entry, result)
        self._send_soon()
        return True

    def _failed(self, batch: Batch, failure: ServiceError) -> None:
        for entry in batch:
            fail_waiter(entry.waiter, failure)
        self._send_soon()

    def _unmatched(self, answer: billing_pb2.LedgerResponse) -> None:
        log.error("ledger answer for an unknown batch", extra={"fields": {"batch_id": answer.batch_id}})

    def _deliver(self, entry: _Entry, result: billing_pb2.LedgerResult) -> None:
        kind = result.WhichOneof("result")
        if kind == "error":
            fail_waiter(entry.waiter, from_call_error(result.error))
            return
        value = getattr(result, kind) if kind else None
        if entry.waiter.done():
            if kind == "reserve":
                self._release_abandoned(value.hold_id)
            return
        if kind != entry.operation.WhichOneof("operation"):
            entry.waiter.set_exception(ServiceError(Reason.INTERNAL, "billing answered with the wrong result"))
            return
        entry.waiter.set_result(value)

    def _release_abandoned(self, hold_id: str) -> None:
        """The caller stopped waiting for this hold: give the credits back now."""
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        waiter.add_done_callback(_log_failed_release)
        self._enqueue(_Entry(billing_pb2.LedgerOperation(release=billing_pb2.ReleaseRequest(hold_id=hold_id)),
                             waiter))


def _log_failed_release(waiter: asyncio.Future[Any]) -> None:
    if not waiter.cancelled() and waiter.exception() is not None:
        # The hold expires on its own and the reaper returns the credits.
        log.warning("could not release an abandoned hold",
                    extra={"fields": {"detail": str(waiter.exception())}})
