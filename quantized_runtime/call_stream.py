"""Many calls over one long-lived bidi stream: the lifecycle both ends share.

The edge sends its money operations and its Generate calls over one stream per
peer (billing's Ledger, provider_svc's GenerateStream), because a message on an
open stream costs far less than a unary call. Their lifecycle is subtle, and
written twice it was fixed twice, so it lives here once and each stream adds
only its own messages through a few hooks:

- `CallStreamClient`, the caller's half: one stream at a time, opened by the
  first call; calls in flight by id; one writer task per stream, since
  grpc.aio allows one write at a time and a write interrupted by its caller's
  cancellation cancels the whole call; one reader task. Both run in a context
  of their own: they serve every request and must not log under the request id
  of the one that opened the stream. Each call is counted and timed by how it
  ended (quantized_runtime.metrics.StreamCallMetrics). A call may ask to hear
  when its message has been written to the stream (handed to gRPC, not yet
  answered): the edge sends a response only once that request's charge is on
  its way to billing.
  On a draining notice the stream is
  retired: new calls open a new stream (another replica, or the restarted
  service), this side of the old one is closed once what was queued for it is
  written, and the answers still coming on it are delivered. When a stream
  ends, every call still in flight on it fails with a `StreamBroken`.
- `CallStreamServer`, the serving half: a task per incoming message, writes one
  at a time in the order they are ready, the draining notice (StreamDrain), and
  when the caller closes its side, the work in flight finished before the stream
  ends OK. The server never ends a stream the caller may still be writing to:
  with grpc.aio a write that meets the end of its call turns the call's status
  into INTERNAL (grpc/grpc#36066), and the caller could no longer tell an unread
  request from a lost one.

Each stream's answer message has a `draining` field: set, it carries nothing else.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, Generic, Protocol, TypeVar

import grpc

from quantized_runtime.errors import Reason, ServiceError
from quantized_runtime.grpc_errors import from_rpc_error
from quantized_runtime.client import method_name
from quantized_runtime.metrics import StreamCallMetrics
from quantized_runtime.stream_drain import StreamDrain

log = logging.getLogger("quantized.call_stream")


class StreamBroken(ServiceError):
    """A call lost with its stream: the stream broke, or the peer ended it with
    the call unanswered (the call may have been carried out). Every such failure
    is built here, so how callers see an unreachable peer is decided in one place:
    SERVICE_UNAVAILABLE, as for a unary call to a peer that is down."""

    def __init__(self, message: str) -> None:
        super().__init__(Reason.SERVICE_UNAVAILABLE, message)


def stream_failure(stream: str, cause: BaseException) -> StreamBroken:
    """`stream` names it for the caller, e.g. "ledger stream to billing"."""
    detail = from_rpc_error(cause).message if isinstance(cause, grpc.RpcError) else str(cause)
    return StreamBroken(f"{stream} failed: {detail}")


def fail_waiter(waiter: asyncio.Future[Any], failure: ServiceError) -> None:
    """Fail a caller still waiting (one that gave up is not told twice)."""
    if not waiter.done():
        waiter.set_exception(failure)


class _Answer(Protocol):
    draining: bool


RequestT = TypeVar("RequestT")
AnswerT = TypeVar("AnswerT", bound=_Answer)
CallT = TypeVar("CallT")


# A message and the future its writer resolves once the message is written (or None).
_Outgoing = tuple[RequestT, "asyncio.Future[None] | None"]


class _Stream(Generic[RequestT]):
    """One stream: the gRPC call, the queue its writer takes messages from, and its two tasks."""

    __slots__ = ("call", "outbox", "writer", "reader")

    def __init__(self, call: grpc.aio.StreamStreamCall) -> None:
        self.call = call
        # None closes this side of the stream.
        self.outbox: asyncio.Queue[_Outgoing[RequestT] | None] = asyncio.Queue()
        self.writer: asyncio.Task[None] | None = None
        self.reader: asyncio.Task[None] | None = None

    def close(self) -> None:
        for task in (self.writer, self.reader):
            if task is not None:
                task.cancel()
        self.call.cancel()


class _InFlight(Generic[CallT]):
    __slots__ = ("stream", "call", "started")

    def __init__(self, stream: _Stream[Any], call: CallT) -> None:
        self.stream = stream
        self.call = call
        self.started = time.perf_counter()


class CallStreamClient(Generic[RequestT, AnswerT, CallT]):
    """The caller's half. A subclass sends with `_start`, waits with `_wait`,
    and implements the hooks `_call_id`, `_answered` and `_failed`."""

    def __init__(self, open_call: Callable[[], grpc.aio.StreamStreamCall], *, stream: str, peer: str,
                 logger: logging.Logger) -> None:
        """`stream` and `peer` name them in errors ("ledger stream", "billing");
        `logger` is the client's own."""
        self._open_call = open_call
        self._name = f"{stream} to {peer}"
        self._closed_by_peer = f"{peer} closed the {stream}"
        self._peer = peer
        self._log = logger
        self._metrics = StreamCallMetrics(method_name(open_call))
        self._stream: _Stream[RequestT] | None = None
        # Every stream not yet ended: the current one and any being drained.
        self._streams: set[_Stream[RequestT]] = set()
        self._in_flight: dict[int, _InFlight[CallT]] = {}
        self._call_ids = itertools.count(1)
        self._closed = False

    # The hooks.

    def _call_id(self, answer: AnswerT) -> int:
        """The id of the call an answer belongs to."""
        raise NotImplementedError

    def _answered(self, call: CallT, answer: AnswerT) -> bool:
        """Take an answer for a call in flight; True once the call has its last one."""
        raise NotImplementedError

    def _failed(self, call: CallT, failure: ServiceError) -> None:
        """The call will get no answer: fail its callers."""
        raise NotImplementedError

    def _unmatched(self, answer: AnswerT) -> None:
        """An answer for no call in flight: by default, one whose caller gave up."""

    # For the subclass.

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise self._closing()

    def _new_call_id(self) -> int:
        return next(self._call_ids)

    def _start(self, call_id: int, call: CallT, message: RequestT,
               written: asyncio.Future[None] | None = None) -> None:
        """Send `message`, which starts the call, on the current stream (opened if
        need be); `written`, if given, is resolved once the message is written."""
        stream = self._stream or self._open()
        self._in_flight[call_id] = _InFlight(stream, call)
        stream.outbox.put_nowait((message, written))

    def _abandon(self, call_id: int, notice: RequestT | None = None) -> None:
        """The caller gave up: forget the call, and send `notice` for it while its stream is written to."""
        in_flight = self._in_flight.pop(call_id, None)
        if in_flight is None:
            return
        self._metrics.abandoned()
        if notice is not None and in_flight.stream is self._stream:
            in_flight.stream.outbox.put_nowait((notice, None))

    @property
    def _calls_in_flight(self) -> int:
        return len(self._in_flight)

    async def _wait(self, waiter: asyncio.Future[Any], timeout: float,
                    give_up: Callable[[], None] | None = None) -> Any:
        """The waiter's result; `give_up` runs when the caller times out or is cancelled."""
        try:
            return await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            if give_up is not None:
                give_up()
            raise ServiceError(Reason.SERVICE_UNAVAILABLE,
                               f"{self._peer} did not answer within {timeout:.1f} s") from None
        except asyncio.CancelledError:
            if give_up is not None:
                give_up()
            raise

    async def close(self) -> None:
        """Fail every call in flight and end every stream."""
        self._closed = True
        for stream in self._streams:
            stream.close()
        self._streams.clear()
        self._stream = None
        closing = self._closing()
        in_flight = list(self._in_flight.values())
        self._in_flight.clear()
        for lost in in_flight:
            self._metrics.broken()
            self._failed(lost.call, closing)

    # The lifecycle.

    def _closing(self) -> ServiceError:
        return ServiceError(Reason.SERVICE_UNAVAILABLE, f"the {self._name} is closed: shutting down")

    def _open(self) -> _Stream[RequestT]:
        stream: _Stream[RequestT] = _Stream(self._open_call())
        loop, context = asyncio.get_running_loop(), contextvars.Context()
        stream.writer = loop.create_task(self._write(stream), context=context)
        stream.reader = loop.create_task(self._read(stream), context=context)
        self._streams.add(stream)
        self._stream = stream
        return stream

    async def _write(self, stream: _Stream[RequestT]) -> None:
        try:
            while (outgoing := await stream.outbox.get()) is not None:
                message, written = outgoing
                await stream.call.write(message)
                if written is not None and not written.done():
                    written.set_result(None)
            await stream.call.done_writing()
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - every caller on the stream must hear of it
            self._ended(stream, stream_failure(self._name, error))

    async def _read(self, stream: _Stream[RequestT]) -> None:
        failure = None  # the stream ended with status OK
        try:
            async for answer in stream.call:
                if answer.draining:
                    self._retire(stream)
                else:
                    self._take(answer)
        except grpc.RpcError as error:
            failure = stream_failure(self._name, error)
        except asyncio.CancelledError:
            failure = StreamBroken(f"the {self._name} was cancelled")
            raise
        finally:
            self._ended(stream, failure)

    def _retire(self, stream: _Stream[RequestT]) -> None:
        """The peer is stopping: what was sent is still answered on this stream;
        the next call opens a new one."""
        if self._stream is stream:
            self._stream = None
            stream.outbox.put_nowait(None)

    def _take(self, answer: AnswerT) -> None:
        call_id = self._call_id(answer)
        in_flight = self._in_flight.get(call_id)
        if in_flight is None:
            self._unmatched(answer)
        elif self._answered(in_flight.call, answer):
            self._in_flight.pop(call_id, None)
            self._metrics.answered(in_flight.started)

    def _ended(self, stream: _Stream[RequestT], failure: StreamBroken | None) -> None:
        """Calls still unanswered fail: after an error they may have been carried
        out. (`failure` is None when the stream ended OK, which the peer does only
        once this side is closed and every call is answered.)"""
        if self._stream is stream:
            self._stream = None
        self._streams.discard(stream)
        stream.close()
        lost = [call_id for call_id, in_flight in self._in_flight.items() if in_flight.stream is stream]
        failure = failure or StreamBroken(self._closed_by_peer)
        if lost and not self._closed:
            self._log.warning("%s ended with calls unanswered", self._name,
                              extra={"fields": {"calls": len(lost), "detail": failure.message}})
        for call_id in lost:
            self._metrics.broken()
            self._failed(self._in_flight.pop(call_id).call, failure)


class CallStreamServer(Generic[RequestT, AnswerT]):
    """The serving half of one stream call: `serve` reads, the handler's
    `on_message` starts each message's work with `start`, which answers with `write`."""

    def __init__(self, context: grpc.aio.ServicerContext, drain: StreamDrain, draining: AnswerT, *,
                 finish_work_read: bool = False) -> None:
        """`finish_work_read`: the work of every message read is carried out even
        when the call ends first (its answer is then lost), for work the caller
        cannot take back once written, such as billing's Charges."""
        self._finish_work_read = finish_work_read
        self._context = context
        self._drain = drain
        self._draining = draining
        # grpc.aio allows one write at a time; the lock is FIFO, so answers go
        # in the order they are ready and a long one takes turns with the others.
        self._writing = asyncio.Lock()
        self._work: set[asyncio.Task[None]] = set()

    async def serve(self, requests: AsyncIterator[RequestT],
                    on_message: Callable[[RequestT], Awaitable[None]]) -> None:
        """Read until the caller closes its side, then finish the work in flight:
        the stream then ends OK. Should the call end first, its work is
        cancelled (unless `finish_work_read`)."""
        async with self._drain.announcing(self._announce_drain):
            try:
                async for message in requests:
                    await on_message(message)
                while self._work:
                    await asyncio.wait(self._work)
            finally:
                if not self._finish_work_read:
                    for work in self._work:
                        work.cancel()

    def start(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A message's work, in a task of its own (with a copy of the stream's context)."""
        task = asyncio.get_running_loop().create_task(work)
        self._work.add(task)
        task.add_done_callback(self._finished)
        return task

    async def write(self, answer: AnswerT) -> None:
        async with self._writing:
            await self._context.write(answer)

    async def _announce_drain(self) -> None:
        await self.write(self._draining)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._work.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # An answer that could not be written: the call is over, and ends as it did.
            log.warning("a stream message's work failed", exc_info=task.exception())
