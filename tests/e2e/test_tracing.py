"""Tracing end to end: `quantized dev` with tracing on exports, over OTLP/HTTP to a
receiver in this test, one trace per HTTP request whose spans come from every
service in the right parent/child order; no secret reaches a span or a log line."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.e2e.dev_stack import DevStack, start_dev_stack
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan

pytestmark = pytest.mark.slow

SERVICES = ("quantized-edge", "quantized-billing", "quantized-catalog", "quantized-provider")
HTTP_ROOT = "POST /v1/images/generations"
SERVER, CLIENT = Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CLIENT


@dataclass
class TracedRequest:
    spans: list[ReceivedSpan]
    export_bodies: list[bytes]
    request_id: str
    log_lines: list[str]
    secrets: dict[str, str]

    def trace(self) -> list[ReceivedSpan]:
        (root,) = [span for span in self.spans if span.name == HTTP_ROOT]
        return [span for span in self.spans if span.trace_id == root.trace_id]


def _plant_admin_token(data_dir: Path) -> str:
    """The dev stack keeps the admin token it finds in its data directory."""
    token = f"planted-admin-token-{secrets.token_urlsafe(32)}"
    data_dir.mkdir(parents=True)
    path = data_dir / "admin-token"
    path.write_text(token)
    os.chmod(path, 0o600)
    return token


def _log_lines(stack: DevStack) -> list[str]:
    logs = Path(stack.state["data_dir"]) / "logs"
    return [line for path in sorted(logs.glob("*.log")) for line in path.read_text().splitlines()
            ] + stack.stderr_lines


@contextlib.contextmanager
def _one_traced_request(tmp_path: Path, sample_ratio: str) -> Iterator[TracedRequest]:
    """One image request through a freshly started, traced dev stack (so nothing
    is cached at the edge); the stack is stopped, which flushes every service's spans."""
    planted = {"admin token": _plant_admin_token(tmp_path / "data"),
               "OpenAI key": f"sk-planted-openai-{secrets.token_urlsafe(24)}"}
    with OtlpReceiver() as receiver:
        stack = start_dev_stack(tmp_path, settings={
            "QUANTIZED_TRACING": "true",
            "QUANTIZED_TRACING_SAMPLE_RATIO": sample_ratio,
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.endpoint,
            "OPENAI_API_KEY": planted["OpenAI key"],
        })
        try:
            planted["API key"] = stack.api_key
            response = httpx.post(f"{stack.base_url}/images/generations", timeout=60,
                                  headers={"Authorization": f"Bearer {stack.api_key}"},
                                  json={"model": "sandbox-image-1", "prompt": "a traced hedgehog",
                                        "size": "256x256"})
            assert response.status_code == 200, response.text
        finally:
            assert stack.stop() == 0
        yield TracedRequest(receiver.spans(), list(receiver.bodies), response.headers["x-request-id"],
                            _log_lines(stack), planted)


@pytest.fixture(scope="module")
def traced(tmp_path_factory) -> Iterator[TracedRequest]:
    with _one_traced_request(tmp_path_factory.mktemp("traced"), "1.0") as request:
        yield request


def test_one_http_request_is_one_trace_with_spans_from_every_service(traced):
    roots = [span for span in traced.spans if span.name == HTTP_ROOT]
    assert len(roots) == 1
    (root,) = roots
    assert root.service == "quantized-edge" and root.kind == SERVER and root.parent_span_id == ""
    assert root.attributes["quantized.request_id"] == traced.request_id
    assert root.attributes["http.response.status_code"] == 200
    assert {span.service for span in traced.trace()} == set(SERVICES)


def test_spans_are_in_caller_callee_order(traced):
    trace = traced.trace()
    by_id = {span.span_id: span for span in trace}
    (root,) = [span for span in trace if span.name == HTTP_ROOT]

    def ancestors(span: ReceivedSpan) -> list[ReceivedSpan]:
        chain = []
        while span.parent_span_id:
            span = by_id[span.parent_span_id]
            chain.append(span)
        return chain

    # Every span of the trace descends from the edge's HTTP span.
    assert all(root in ancestors(span) for span in trace if span is not root)
    # Each internal service's server span is a child of one of the edge's client spans.
    served = [span for span in trace if span.kind == SERVER and span.service != "quantized-edge"]
    for span in served:
        parent = by_id[span.parent_span_id]
        assert (parent.service, parent.kind) == ("quantized-edge", CLIENT), span
    names = {(span.service, span.name) for span in served}
    # Nothing was cached at the edge: it authenticated, resolved the route and
    # quoted, generated, and charged. (The credit lease it admitted on is
    # background work that serves many requests: a trace of its own.)
    assert {("quantized-billing", "quantized.billing.v1.BillingService/Authenticate"),
            ("quantized-catalog", "quantized.catalog.v1.CatalogService/ResolveRoute"),
            ("quantized-catalog", "quantized.catalog.v1.CatalogService/QuotePrice"),
            ("quantized-billing", "quantized.billing.v1.BillingService/Ledger charge"),
            ("quantized-provider", "quantized.provider.v1.ProviderService/GenerateStream")} <= names
    # The upstream call is the provider's client span, under its GenerateStream span.
    (upstream,) = [span for span in trace if span.name == "upstream generate"]
    parent = by_id[upstream.parent_span_id]
    assert (upstream.service, upstream.kind) == ("quantized-provider", CLIENT)
    assert (parent.service, parent.name) == ("quantized-provider",
                                             "quantized.provider.v1.ProviderService/GenerateStream")
    assert upstream.attributes == {
        "quantized.provider": "sandbox", "quantized.upstream.family": "sandbox",
        "quantized.upstream.model": "sandbox-image-1", "quantized.outcome": "OK"}


def test_log_lines_of_the_request_carry_its_trace_id_next_to_its_request_id(traced):
    (root,) = [span for span in traced.spans if span.name == HTTP_ROOT]
    entries = [json.loads(line) for line in traced.log_lines if traced.request_id in line]
    # The edge's request line, and the rpc lines of catalog, billing and provider_svc.
    assert {entry["logger"] for entry in entries} >= {"quantized.edge.request", "quantized.rpc"}
    assert len(entries) >= 5
    for entry in entries:
        assert entry["trace_id"] == root.trace_id, entry
        keys = list(entry)
        assert keys.index("trace_id") == keys.index("request_id") + 1


def test_no_secret_in_any_span_or_log_line(traced):
    assert traced.export_bodies and traced.log_lines
    exported = b"".join(traced.export_bodies)
    logged = "\n".join(traced.log_lines)
    for what, secret in traced.secrets.items():
        assert secret.encode() not in exported, f"the {what} is in an exported span"
        assert secret not in logged, f"the {what} is in a log line"


def test_at_sample_ratio_zero_no_span_is_exported_and_no_log_line_has_a_trace_id(tmp_path):
    with _one_traced_request(tmp_path, "0") as request:
        assert request.spans == []
        entries = [json.loads(line) for line in request.log_lines if request.request_id in line]
        assert len(entries) >= 5
        assert not any("trace_id" in entry for entry in entries)
