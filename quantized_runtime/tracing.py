"""OpenTelemetry tracing, off unless a service's settings turn it on.

`tracing_session(service_name, settings)` wraps a service's process: with
`QUANTIZED_TRACING=true` it installs a tracer provider (a parent-based sampler at
`QUANTIZED_TRACING_SAMPLE_RATIO`, a batch span processor, the OTLP/HTTP protobuf
exporter, which reads the standard `OTEL_EXPORTER_OTLP_*` variables) and flushes
it when the process ends. Off, the SDK is not even imported, and every helper
here returns at once without building a span: the hot path pays a function call.

Context crosses processes as a W3C `traceparent`: in gRPC metadata on unary calls
(quantized_runtime.client, quantized_runtime.interceptors), and in each message
on the long-lived streams, which carry many requests' calls (billing's
`LedgerOperation.traceparent`, provider_svc's `GenerateStreamRequest.traceparent`).

Span attributes name methods, outcomes, models and request ids only: never a
token, a key, a credential or a prompt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from quantized_runtime.settings import ServiceSettings

log = logging.getLogger("quantized.tracing")

TRACEPARENT = "traceparent"
OK = "OK"
# The attribute that names a failed span's error reason (and an upstream call's OK).
OUTCOME = "quantized.outcome"
# Every gRPC span's attributes (OpenTelemetry's RPC semantic conventions).
GRPC_ATTRIBUTES = {"rpc.system": "grpc"}

AttributeValue = str | int | float | bool
Attributes = Mapping[str, AttributeValue]

_propagator = TraceContextTextMapPropagator()
# Set by `tracing_session` when tracing is on; None means every helper is a no-op.
_tracer: trace.Tracer | None = None
_NO_SPAN: contextlib.nullcontext[None] = contextlib.nullcontext()


def enabled() -> bool:
    return _tracer is not None


@contextlib.contextmanager
def tracing_session(service_name: str, settings: ServiceSettings) -> Iterator[None]:
    """Trace this process while the block runs (when the settings say so), then
    export what is left. `service_name` is the `service.name` resource attribute
    unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES name one."""
    if not settings.tracing:
        yield
        return
    provider = _provider(service_name, settings.tracing_sample_ratio)
    global _tracer
    _tracer = provider.get_tracer("quantized")
    log.info("tracing on", extra={"fields": {"sample_ratio": settings.tracing_sample_ratio}})
    try:
        yield
    finally:
        _tracer = None
        provider.shutdown()


def _provider(service_name: str, sample_ratio: float) -> TracerProvider:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    # OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES may name the service; else its own name.
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    # Parent-based: a service keeps or drops a call as its caller did, so a trace is whole.
    provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(sample_ratio)))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def server_span(name: str, traceparent: str | None, attributes: Attributes | None = None,
                ) -> contextlib.AbstractContextManager[Span | None]:
    """The current span for serving a call whose caller sent `traceparent` (None
    or "": a new trace, which the sampler keeps or drops). Yields None when
    tracing is off or the caller's trace is not sampled; then the caller's
    context is current, so calls made meanwhile forward it, dropped too."""
    if _tracer is None:
        return _NO_SPAN
    if traceparent and not _sampled(traceparent):
        return _in_context(_parent(traceparent))
    return _current_span(name, SpanKind.SERVER, attributes, _parent(traceparent))


@contextlib.contextmanager
def _in_context(context: otel_context.Context) -> Iterator[None]:
    token = otel_context.attach(context)
    try:
        yield None
    finally:
        otel_context.detach(token)


def client_span(name: str, attributes: Attributes | None = None,
                ) -> contextlib.AbstractContextManager[Span | None]:
    """The current span for a call to a peer or an upstream, a child of the
    current span (with none, a new trace, which the sampler keeps or drops).
    Yields None when tracing is off or the current span's trace is not sampled:
    the call then forwards that span's `traceparent`, so the peer drops it too."""
    if _tracer is None or _in_dropped_trace():
        return _NO_SPAN
    return _current_span(name, SpanKind.CLIENT, attributes, None)


@contextlib.contextmanager
def _current_span(name: str, kind: SpanKind, attributes: Attributes | None,
                  parent: otel_context.Context | None) -> Iterator[Span]:
    assert _tracer is not None
    # Exceptions become an outcome (`failed`), not an event with a stack trace and a message.
    with _tracer.start_as_current_span(name, context=parent, kind=kind, attributes=attributes,
                                       record_exception=False, set_status_on_exception=False) as span:
        try:
            yield span
        except BaseException as error:
            if not _has_outcome(span):
                failed(span, _reason_of(error))
            raise


def start_client_span(name: str, attributes: Attributes | None = None) -> Span | None:
    """A span for one operation sent on a stream, a child of the current span,
    that the caller ends (`finish`, `finish_when_done`) and does not make current:
    its answer comes in another task. None as for `client_span`."""
    if _tracer is None or _in_dropped_trace():
        return None
    return _tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes,
                              record_exception=False, set_status_on_exception=False)


def start_server_span(name: str, traceparent: str, attributes: Attributes | None = None) -> Span | None:
    """A span for serving one operation read from a stream, that the caller ends
    (`finish`) and does not make current: one batch serves many traces. None as
    for `server_span`."""
    if _tracer is None or (traceparent and not _sampled(traceparent)):
        return None
    return _tracer.start_span(name, context=_parent(traceparent), kind=SpanKind.SERVER, attributes=attributes,
                              record_exception=False, set_status_on_exception=False)


def finish(span: Span | None, outcome: str = OK) -> None:
    """End a span with its outcome: OK, or an error reason."""
    if span is None:
        return
    if outcome != OK:
        failed(span, outcome)
    span.end()


def finish_when_done(span: Span | None, future: asyncio.Future[Any]) -> None:
    """End the span when the future is: OK, its error's reason, or CANCELLED."""
    if span is not None:
        future.add_done_callback(lambda done: finish(span, _outcome_of(done)))


def _outcome_of(future: asyncio.Future[Any]) -> str:
    if future.cancelled():
        return "CANCELLED"
    error = future.exception()
    return OK if error is None else _reason_of(error)


def failed(span: Span | None, reason: str) -> None:
    """Mark a span failed with an error reason (a `quantized_runtime.errors.Reason`
    value or a gRPC status name), never an error message."""
    if span is not None and span.is_recording():
        span.set_attribute(OUTCOME, reason)
        span.set_status(Status(StatusCode.ERROR, reason))


def current_span() -> Span | None:
    """The current span; None when tracing is off."""
    return None if _tracer is None else trace.get_current_span()


def _has_outcome(span: Span) -> bool:
    """Whether the work inside the span already set its outcome (say, the reason
    of the error that an abort then reports as a mere AbortError)."""
    status = getattr(span, "status", None)
    return status is not None and status.status_code is StatusCode.ERROR


def _reason_of(error: BaseException) -> str:
    reason = getattr(error, "reason", None)
    return str(getattr(reason, "value", reason)) if reason is not None else type(error).__name__


def traceparent(span: Span | None = None) -> str:
    """The W3C traceparent of `span` (default: the current span, sampled or not)
    for a peer; "" when tracing is off or there is no span."""
    if _tracer is None:
        return ""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=trace.set_span_in_context(span) if span is not None else None)
    return carrier.get(TRACEPARENT, "")


def _in_dropped_trace() -> bool:
    """Whether the current span belongs to a trace the sampler dropped."""
    current = trace.get_current_span()
    return current.get_span_context().is_valid and not current.is_recording()


def _sampled(traceparent: str) -> bool:
    """The sampled flag of a W3C traceparent (its last field); a malformed one
    counts as sampled, and the span made for it starts a new trace."""
    try:
        return bool(int(traceparent[-2:], 16) & 1)
    except ValueError:
        return True


def _parent(traceparent: str | None) -> otel_context.Context:
    if not traceparent:
        # An explicit empty context: the span is a root even inside another span's task.
        return otel_context.Context()
    return _propagator.extract({TRACEPARENT: traceparent}, context=otel_context.Context())


def current_trace_id() -> str | None:
    """The current span's trace id as 32 hex digits, for log lines; None without
    one, or when its trace is not sampled (no span of it is exported)."""
    if _tracer is None:
        return None
    span_context = trace.get_current_span().get_span_context()
    return trace.format_trace_id(span_context.trace_id) if span_context.trace_flags.sampled else None
