"""Server interceptor: request id, one log line per call, exceptions to
google.rpc.Status, each call counted and timed (quantized_runtime.metrics), and
the call's server span when tracing is on."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from quantized_runtime import tracing
from quantized_runtime.errors import Reason, ServiceError
from quantized_runtime.grpc_errors import to_rpc_status
from quantized_runtime.metrics import BIDI_STREAM, UNARY, server_rpc_metrics, status_code
from quantized_runtime.request_context import REQUEST_ID_METADATA_KEY, current_request_id, new_request_id

log = logging.getLogger("quantized.rpc")

# Health and reflection calls are polled constantly; logging them is noise.
_QUIET_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


class ErrorAndLoggingInterceptor(grpc.aio.ServerInterceptor):
    """Internal services take the request id their caller forwards; a public server
    (`mint_request_ids`) gives every call a fresh one, because callers may reuse ids
    and the id keys billing's idempotent credit hold. A long-lived stream (a
    coroutine bidi handler: Ledger, GenerateStream) is counted and timed only;
    its handler logs and answers each message's errors itself. Without
    `log_calls` the handlers write their own line per call (the edge's)."""

    def __init__(self, mint_request_ids: bool = False, log_calls: bool = True) -> None:
        self._mint_request_ids = mint_request_ids
        self._log_calls = log_calls
        # One wrapped handler per method, built on first use: the request id is read
        # from each call's context, so nothing per call is allocated here.
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        if handler is None or method.startswith(_QUIET_PREFIXES):
            return handler
        if handler.unary_unary is not None:
            wrapped = _guard(method, handler, self._mint_request_ids, self._log_calls)
        elif handler.stream_stream is not None and inspect.iscoroutinefunction(handler.stream_stream):
            wrapped = _counted_stream(method, handler)
        else:
            return handler
        self._wrapped[method] = wrapped
        return wrapped


def _guard(method: str, handler: grpc.RpcMethodHandler, mint_request_ids: bool,
           log_calls: bool) -> grpc.RpcMethodHandler:
    inner = handler.unary_unary
    started_total, metrics = server_rpc_metrics(method, UNARY)

    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        request_id = new_request_id() if mint_request_ids else _request_id(context.invocation_metadata())
        token = current_request_id.set(request_id)
        started = time.perf_counter()
        started_total.inc()
        outcome = "OK"
        code = grpc.StatusCode.OK
        try:
            return await inner(request, context)
        except ServiceError as error:
            outcome = error.reason.value
            status = to_rpc_status(error)
            code = status.code
            await context.abort_with_status(status)
        except grpc.aio.AbortError:
            outcome = "ABORTED"
            code = status_code(context.code())
            raise
        except Exception:
            outcome = Reason.INTERNAL.value
            code = grpc.StatusCode.INTERNAL
            log.exception("unhandled error in %s", method)
            await context.abort_with_status(to_rpc_status(
                ServiceError(Reason.INTERNAL, f"internal error (request id {request_id})")))
        finally:
            if outcome != "OK":
                tracing.failed(tracing.current_span(), outcome)
            metrics.observe(code, started)
            if log_calls:
                log.info("rpc", extra={"fields": {
                    "method": method, "outcome": outcome,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3)}})
            current_request_id.reset(token)

    return grpc.unary_unary_rpc_method_handler(
        _traced(method, guarded, mint_request_ids) if tracing.enabled() else guarded,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _traced(method: str, guarded: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]],
            public: bool) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
    """`guarded` inside the call's server span, a child of the caller's span. A
    public server starts a new trace: its callers' trace context is not trusted
    (a caller could make every call sampled), as their request ids are not."""
    name = method.lstrip("/")

    async def traced(request: Any, context: grpc.aio.ServicerContext) -> Any:
        traceparent = None if public else _metadata_value(context.invocation_metadata(), tracing.TRACEPARENT)
        with tracing.server_span(name, traceparent, tracing.GRPC_ATTRIBUTES):
            return await guarded(request, context)

    return traced


def _counted_stream(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    inner = handler.stream_stream
    started_total, metrics = server_rpc_metrics(method, BIDI_STREAM)

    async def counted(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> None:
        started = time.perf_counter()
        started_total.inc()
        code = grpc.StatusCode.UNKNOWN
        try:
            await inner(requests, context)
            code = status_code(context.code())
        except grpc.aio.AbortError:
            code = status_code(context.code())
            raise
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            metrics.observe(code, started)

    return grpc.stream_stream_rpc_method_handler(
        counted,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _request_id(metadata: Any) -> str:
    request_id = _metadata_value(metadata, REQUEST_ID_METADATA_KEY)
    return "-" if request_id is None else request_id


def _metadata_value(metadata: Any, wanted: str) -> str | None:
    for key, value in metadata or ():
        if key == wanted:
            return str(value)
    return None
