"""Calling a peer: deadline on every call, request id and trace context forwarded,
typed errors back, each call counted and timed by method and code
(quantized_runtime.metrics)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import grpc

from quantized_runtime import tracing
from quantized_runtime.grpc_errors import from_rpc_error
from quantized_runtime.metrics import client_rpc_metrics, status_code
from quantized_runtime.request_context import REQUEST_ID_METADATA_KEY, current_request_id


def method_name(stub_method: Any) -> str:
    """The full method path of a generated stub's multicallable
    (`/quantized.catalog.v1.CatalogService/ResolveRoute`)."""
    name = getattr(stub_method, "_method", b"")
    return name.decode(errors="replace") if isinstance(name, bytes) else str(name)


async def call(method: Any, request: Any, *, timeout: float,
               metadata: Sequence[tuple[str, str]] = (), wait_for_ready: bool = False) -> Any:
    """Invoke a unary stub method; a failure raises ServiceError, never grpc.RpcError.
    With `wait_for_ready` the call waits (within `timeout`) for a connection to
    the peer instead of failing at once while none is up."""
    full_metadata = (*metadata, (REQUEST_ID_METADATA_KEY, current_request_id.get()))
    name = method_name(method)
    metrics = client_rpc_metrics(name)
    with tracing.client_span(name.lstrip("/"), tracing.GRPC_ATTRIBUTES):
        traceparent = tracing.traceparent()
        if traceparent:
            full_metadata = (*full_metadata, (tracing.TRACEPARENT, traceparent))
        started = time.perf_counter()
        try:
            answer = await method(request, timeout=timeout, metadata=full_metadata, wait_for_ready=wait_for_ready)
        except grpc.RpcError as exc:
            metrics.observe(status_code(exc.code()), started)
            raise from_rpc_error(exc) from None
        metrics.observe(grpc.StatusCode.OK, started)
        return answer
