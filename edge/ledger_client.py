"""Reserve, Settle and Release through billing's Ledger stream, batched.

A unary gRPC call costs both ends about half a millisecond of CPU here, and each
billing transaction a commit. So the edge keeps one long-lived Ledger stream to
billing and sends the money operations of its concurrent requests together:
an operation submitted while MAX_BATCHES_IN_FLIGHT batches are unanswered waits
and leaves with the next batch ("natural batching"). One request alone goes at
once, with no timer and no added latency; under load, many requests share one
message and one database transaction.

If the stream breaks, the operations in flight fail with an INTERNAL error and
the next batch opens a new stream. When billing stops, it says so on the stream
(billing.proto): the batches already sent are still answered there, the stream
is closed on this side, and the next batch opens a new stream, which reaches
another billing replica. A Reserve that succeeds after its caller gave up
(timeout, cancellation) is released straight away, so no credits stay held
until the hold expires.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
from typing import Any

import grpc

from quantized.billing.v1 import billing_pb2, billing_pb2_grpc
from quantized_runtime.errors import Reason, ServiceError, from_call_error
from quantized_runtime.grpc_errors import from_rpc_error

log = logging.getLogger("quantized.edge.ledger")

MAX_BATCHES_IN_FLIGHT = 2
MAX_OPERATIONS_PER_BATCH = 256


class _Entry:
    __slots__ = ("operation", "waiter")

    def __init__(self, operation: billing_pb2.LedgerOperation, waiter: asyncio.Future[Any]) -> None:
        self.operation = operation
        self.waiter = waiter


class _Batch:
    __slots__ = ("entries", "stream")

    def __init__(self, entries: list[_Entry], stream: grpc.aio.StreamStreamCall) -> None:
        self.entries = entries
        self.stream = stream


class LedgerClient:
    def __init__(self, stub: billing_pb2_grpc.BillingServiceStub) -> None:
        self._stub = stub
        self._waiting: list[_Entry] = []
        self._in_flight: dict[int, _Batch] = {}
        self._batch_ids = itertools.count(1)
        self._call: grpc.aio.StreamStreamCall | None = None
        # Streams billing is draining, to be closed on this side by the sender.
        self._retired: list[grpc.aio.StreamStreamCall] = []
        # One per stream still open: the current one and any being drained.
        self._readers: set[asyncio.Task[None]] = set()
        self._sender: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closed = False

    async def reserve(self, request: billing_pb2.ReserveRequest, timeout: float) -> billing_pb2.ReserveResponse:
        return await self._submit(billing_pb2.LedgerOperation(reserve=request), timeout)

    async def settle(self, request: billing_pb2.SettleRequest, timeout: float) -> billing_pb2.SettleResponse:
        return await self._submit(billing_pb2.LedgerOperation(settle=request), timeout)

    async def release(self, request: billing_pb2.ReleaseRequest, timeout: float) -> billing_pb2.ReleaseResponse:
        return await self._submit(billing_pb2.LedgerOperation(release=request), timeout)

    async def close(self) -> None:
        self._closed = True
        # A reader cancelled while it reads cancels its stream (those being drained).
        for task in (self._sender, *self._readers):
            if task is not None:
                task.cancel()
        if self._call is not None:
            self._call.cancel()
        closing = ServiceError(Reason.INTERNAL, "the edge is shutting down")
        for entry in self._waiting:
            _fail(entry, closing)
        self._waiting.clear()
        for batch in self._in_flight.values():
            for entry in batch.entries:
                _fail(entry, closing)
        self._in_flight.clear()

    async def _submit(self, operation: billing_pb2.LedgerOperation, timeout: float) -> Any:
        if self._closed:
            raise ServiceError(Reason.INTERNAL, "the edge is shutting down")
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Entry(operation, waiter))
        if self._sender is None or self._sender.done():
            # The sender (and the reader it starts) serve every request: they must
            # not carry the request id of the one that happened to start them.
            self._sender = asyncio.get_running_loop().create_task(
                self._send_batches(), context=contextvars.Context())
        self._wake.set()
        try:
            return await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            raise ServiceError(Reason.SERVICE_UNAVAILABLE,
                               f"billing did not answer within {timeout:.1f} s") from None

    async def _send_batches(self) -> None:
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            await self._close_retired()
            while self._waiting and len(self._in_flight) < MAX_BATCHES_IN_FLIGHT:
                batch = self._waiting[:MAX_OPERATIONS_PER_BATCH]
                del self._waiting[:MAX_OPERATIONS_PER_BATCH]
                await self._send(batch)

    async def _send(self, entries: list[_Entry]) -> None:
        batch_id = next(self._batch_ids)
        stream = self._open_stream()
        self._in_flight[batch_id] = _Batch(entries, stream)
        request = billing_pb2.LedgerRequest(
            batch_id=batch_id, operations=[entry.operation for entry in entries])
        try:
            await stream.write(request)
        except Exception as error:  # noqa: BLE001 - every waiter must hear of it
            if self._in_flight.pop(batch_id, None) is not None:
                failure = _stream_failure(error)
                for entry in entries:
                    _fail(entry, failure)
            if self._call is stream:
                self._call = None
                stream.cancel()

    async def _close_retired(self) -> None:
        """Here, in the one task that writes, so that no write is in progress."""
        while self._retired:
            stream = self._retired.pop()
            try:
                await stream.done_writing()
            except Exception:  # noqa: BLE001 - the stream is over already; its reader reports how
                log.debug("closing a drained ledger stream failed", exc_info=True)

    def _open_stream(self) -> grpc.aio.StreamStreamCall:
        if self._call is None:
            self._call = self._stub.Ledger()
            reader = asyncio.get_running_loop().create_task(self._read_answers(self._call))
            self._readers.add(reader)
            reader.add_done_callback(self._readers.discard)
        return self._call

    async def _read_answers(self, stream: grpc.aio.StreamStreamCall) -> None:
        failure = None  # the stream ended with status OK
        try:
            async for response in stream:
                if response.draining:
                    self._retire(stream)
                else:
                    self._answer(response)
        except grpc.RpcError as error:
            failure = _stream_failure(error)
        except asyncio.CancelledError:
            failure = ServiceError(Reason.INTERNAL, "the ledger stream was cancelled")
        finally:
            if self._call is stream:
                self._call = None
            self._stream_ended(stream, failure)

    def _retire(self, stream: grpc.aio.StreamStreamCall) -> None:
        """Billing is stopping: what was sent is still answered on this stream;
        the next batch opens a new one."""
        if self._call is stream:
            self._call = None
        self._retired.append(stream)
        self._wake.set()

    def _answer(self, response: billing_pb2.LedgerResponse) -> None:
        batch = self._in_flight.pop(response.batch_id, None)
        if batch is None:
            log.error("ledger answer for an unknown batch", extra={"fields": {"batch_id": response.batch_id}})
            return
        if len(response.results) != len(batch.entries):
            mismatch = ServiceError(Reason.INTERNAL, "billing answered a batch with the wrong number of results")
            for entry in batch.entries:
                _fail(entry, mismatch)
        else:
            for entry, result in zip(batch.entries, response.results, strict=True):
                self._deliver(entry, result)
        self._wake.set()

    def _deliver(self, entry: _Entry, result: billing_pb2.LedgerResult) -> None:
        kind = result.WhichOneof("result")
        if kind == "error":
            _fail(entry, from_call_error(result.error))
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
        self._waiting.append(_Entry(
            billing_pb2.LedgerOperation(release=billing_pb2.ReleaseRequest(hold_id=hold_id)), waiter))
        self._wake.set()

    def _stream_ended(self, stream: grpc.aio.StreamStreamCall, failure: ServiceError | None) -> None:
        """Batches still unanswered fail: after an error they may have been
        applied. (`failure` is None when the stream ended OK, which billing does
        only once this side is closed and every batch is answered.)"""
        lost = [batch_id for batch_id, batch in self._in_flight.items() if batch.stream is stream]
        failed = [entry for batch_id in lost for entry in self._in_flight.pop(batch_id).entries
                  if not entry.waiter.done()]
        failure = failure or ServiceError(Reason.SERVICE_UNAVAILABLE, "billing closed the ledger stream")
        if failed and not self._closed:
            log.warning("ledger stream ended with batches unanswered",
                        extra={"fields": {"batches": len(lost), "detail": failure.message}})
        for entry in failed:
            _fail(entry, failure)
        self._wake.set()


def _log_failed_release(waiter: asyncio.Future[Any]) -> None:
    if not waiter.cancelled() and waiter.exception() is not None:
        # The hold expires on its own and the reaper returns the credits.
        log.warning("could not release an abandoned hold",
                    extra={"fields": {"detail": str(waiter.exception())}})


def _fail(entry: _Entry, failure: ServiceError) -> None:
    if not entry.waiter.done():
        entry.waiter.set_exception(failure)


def _stream_failure(error: BaseException) -> ServiceError:
    if isinstance(error, grpc.RpcError):
        cause = from_rpc_error(error)
        return ServiceError(Reason.SERVICE_UNAVAILABLE, f"ledger stream to billing failed: {cause.message}")
    return ServiceError(Reason.SERVICE_UNAVAILABLE, f"ledger stream to billing failed: {error}")
