"""quantized_runtime.tracing: nothing built when off; a caller's traceparent is
continued when sampled and dropped when not; spans are flushed at the session's end."""

from __future__ import annotations

import pytest

from quantized_runtime import tracing
from quantized_runtime.settings import ServiceSettings
from tests.otlp_receiver import OtlpReceiver

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN_ID = "b7ad6b7169203331"
SAMPLED = f"00-{TRACE_ID}-{CALLER_SPAN_ID}-01"
NOT_SAMPLED = f"00-{TRACE_ID}-{CALLER_SPAN_ID}-00"


@pytest.fixture
def receiver(monkeypatch):
    with OtlpReceiver() as running:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", running.endpoint)
        monkeypatch.setenv("QUANTIZED_TRACING", "true")
        monkeypatch.setenv("QUANTIZED_TRACING_SAMPLE_RATIO", "1.0")
        yield running


def test_off_no_span_is_built_and_nothing_is_forwarded():
    with tracing.tracing_session("quantized-test", ServiceSettings(listen="127.0.0.1:0")):
        with tracing.server_span("served", SAMPLED) as served, tracing.client_span("called") as called:
            assert served is None and called is None
            assert tracing.start_server_span("operation", SAMPLED) is None
            assert tracing.traceparent() == ""
            assert tracing.current_trace_id() is None


def test_a_sampled_callers_trace_is_continued_and_exported_at_the_end(receiver):
    with tracing.tracing_session("quantized-test", ServiceSettings(listen="127.0.0.1:0")):
        with tracing.server_span("served", SAMPLED) as served:
            assert served is not None
            assert tracing.current_trace_id() == TRACE_ID
            with tracing.client_span("called") as called:
                assert called is not None
                forwarded = tracing.traceparent()
            operation = tracing.start_server_span("operation", SAMPLED)
            tracing.finish(operation, "UPSTREAM_UNAVAILABLE")
    spans = {span.name: span for span in receiver.spans()}
    assert forwarded == f"00-{TRACE_ID}-{spans['called'].span_id}-01"
    assert {name: (span.service, span.trace_id, span.parent_span_id) for name, span in spans.items()} == {
        "served": ("quantized-test", TRACE_ID, CALLER_SPAN_ID),
        "called": ("quantized-test", TRACE_ID, spans["served"].span_id),
        "operation": ("quantized-test", TRACE_ID, CALLER_SPAN_ID),
    }
    assert spans["operation"].attributes[tracing.OUTCOME] == "UPSTREAM_UNAVAILABLE"


def test_a_trace_the_caller_dropped_is_dropped_here_and_forwarded_as_dropped(receiver):
    with tracing.tracing_session("quantized-test", ServiceSettings(listen="127.0.0.1:0")):
        with tracing.server_span("served", NOT_SAMPLED) as served:
            assert served is None
            with tracing.client_span("called") as called:
                assert called is None
                assert tracing.traceparent() == NOT_SAMPLED
            assert tracing.current_trace_id() is None
            assert tracing.start_server_span("operation", NOT_SAMPLED) is None
        with tracing.server_span("root", None) as root:
            # A new trace, which the sampler (ratio 1.0) keeps.
            assert root is not None and root.is_recording()
    assert [span.name for span in receiver.spans()] == ["root"]
