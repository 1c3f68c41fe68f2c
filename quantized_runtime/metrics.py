"""Prometheus metrics every service shares: the `/metrics` HTTP server on an
address of its own, and the gRPC calls each service serves and makes.

Each service defines its own metrics in its `metrics.py`; all of them, and
these, live in prometheus_client's default registry, which also carries the
process collector (`process_cpu_seconds_total`, memory, open files). The server
runs in prometheus_client's own thread on the metrics address only, so
`/metrics` is never served by a public port.

On the hot path a metric update costs a dict lookup and a lock: the labelled
child of each method and code is bound once, on first use, and kept.

gRPC calls carry go-grpc-prometheus' names (`grpc_server_started_total`,
`grpc_server_handled_total`, `grpc_server_handling_seconds`, and
`grpc_client_handled_total`, `grpc_client_handling_seconds`) with the labels
`grpc_service`, `grpc_method`, `grpc_type` and `grpc_code`. The server side is
counted by the runtime's interceptor (quantized_runtime.interceptors), the
client side by `quantized_runtime.client.call`, which every unary peer call
goes through. A long-lived stream (Ledger, GenerateStream) is one such call
however many calls it carries; those are counted per message, on the caller's
side by `StreamCallMetrics` (quantized_runtime.call_stream) and on the serving
side by the service's own metrics (billing's ledger batches, provider_svc's
generations).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import Counter, Histogram, disable_created_metrics, start_http_server

log = logging.getLogger("quantized.metrics")

# The `_created` series double each counter's output and no dashboard reads them.
disable_created_metrics()

# Seconds, from a cached loopback call (under a millisecond) to a slow upstream (minutes).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                   1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

_METHOD_LABELS = ("grpc_service", "grpc_method", "grpc_type")

GRPC_SERVER_STARTED = Counter(
    "grpc_server_started", "RPCs started on the server.", _METHOD_LABELS)
GRPC_SERVER_HANDLED = Counter(
    "grpc_server_handled", "RPCs completed on the server, by status code.", (*_METHOD_LABELS, "grpc_code"))
GRPC_SERVER_HANDLING_SECONDS = Histogram(
    "grpc_server_handling_seconds", "Time from an RPC's start to its end on the server.",
    _METHOD_LABELS, buckets=LATENCY_BUCKETS)
GRPC_CLIENT_HANDLED = Counter(
    "grpc_client_handled", "Unary RPCs made to a peer that completed, by status code.",
    (*_METHOD_LABELS, "grpc_code"))
GRPC_CLIENT_HANDLING_SECONDS = Histogram(
    "grpc_client_handling_seconds", "Time from a unary RPC's start to its answer, as the caller saw it.",
    _METHOD_LABELS, buckets=LATENCY_BUCKETS)
STREAM_CLIENT_CALLS = Counter(
    "quantized_stream_client_calls",
    "Calls sent on a long-lived stream (a Ledger batch, a GenerateStream call), by how they ended: "
    "answered, broken (the stream ended first) or abandoned (the caller gave up).",
    ("grpc_service", "grpc_method", "outcome"))
STREAM_CLIENT_CALL_SECONDS = Histogram(
    "quantized_stream_client_call_seconds",
    "Time from sending a call on a long-lived stream to its last answer.",
    ("grpc_service", "grpc_method"), buckets=LATENCY_BUCKETS)

AUTHORIZATION_REFUSED = Counter(
    "quantized_authorization_refused_calls",
    "Calls the mutual-TLS authorization refused before any work, by method and code "
    "(UNAUTHENTICATED: no service identity; PERMISSION_DENIED: a role the method does not allow).",
    ("grpc_service", "grpc_method", "grpc_code"))

UNARY = "unary"
BIDI_STREAM = "bidi_stream"


def split_method(method: str) -> tuple[str, str]:
    """`/quantized.billing.v1.BillingService/Ledger` -> (`quantized.billing.v1.BillingService`, `Ledger`)."""
    service, _, name = method.lstrip("/").rpartition("/")
    return service or "unknown", name or "unknown"


class RpcMetrics:
    """One method's calls by code and their durations, each child bound once."""

    __slots__ = ("_handled", "_labels", "_by_code", "_seconds")

    def __init__(self, handled: Counter, seconds: Histogram, method: str, rpc_type: str) -> None:
        self._handled = handled
        self._labels = (*split_method(method), rpc_type)
        self._by_code: dict[grpc.StatusCode, Counter] = {}
        self._seconds = seconds.labels(*self._labels)

    @property
    def labels(self) -> tuple[str, str, str]:
        return self._labels

    def observe(self, code: grpc.StatusCode, started: float) -> None:
        """One call ended with `code`; it began at perf_counter() `started`."""
        child = self._by_code.get(code)
        if child is None:
            child = self._by_code[code] = self._handled.labels(*self._labels, code.name)
        child.inc()
        self._seconds.observe(time.perf_counter() - started)


_server_methods: dict[tuple[str, str], tuple[Counter, RpcMetrics]] = {}
_client_methods: dict[str, RpcMetrics] = {}


def server_rpc_metrics(method: str, rpc_type: str) -> tuple[Counter, RpcMetrics]:
    """A served method's started counter and its RpcMetrics."""
    found = _server_methods.get((method, rpc_type))
    if found is None:
        metrics = RpcMetrics(GRPC_SERVER_HANDLED, GRPC_SERVER_HANDLING_SECONDS, method, rpc_type)
        found = _server_methods[(method, rpc_type)] = (GRPC_SERVER_STARTED.labels(*metrics.labels), metrics)
    return found


def client_rpc_metrics(method: str) -> RpcMetrics:
    """A unary method this process calls."""
    found = _client_methods.get(method)
    if found is None:
        found = _client_methods[method] = RpcMetrics(GRPC_CLIENT_HANDLED, GRPC_CLIENT_HANDLING_SECONDS,
                                                     method, UNARY)
    return found


class StreamCallMetrics:
    """The calls one long-lived stream method carries, seen by the caller."""

    __slots__ = ("_answered", "_broken", "_abandoned", "_seconds")

    def __init__(self, method: str) -> None:
        service, name = split_method(method)
        self._answered = STREAM_CLIENT_CALLS.labels(service, name, "answered")
        self._broken = STREAM_CLIENT_CALLS.labels(service, name, "broken")
        self._abandoned = STREAM_CLIENT_CALLS.labels(service, name, "abandoned")
        self._seconds = STREAM_CLIENT_CALL_SECONDS.labels(service, name)

    def answered(self, started: float) -> None:
        self._answered.inc()
        self._seconds.observe(time.perf_counter() - started)

    def broken(self) -> None:
        self._broken.inc()

    def abandoned(self) -> None:
        self._abandoned.inc()


def status_code(value: object) -> grpc.StatusCode:
    """A grpc.StatusCode from what a call reports (a StatusCode, None for OK)."""
    return value if isinstance(value, grpc.StatusCode) else grpc.StatusCode.OK


def parse_listen_address(address: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` as (host, port); ValueError otherwise."""
    host, separator, port = address.rpartition(":")
    if not separator or not host.strip("[]") or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected host:port, got {address!r}")
    return host.strip("[]"), int(port)


@dataclass
class MetricsServer:
    """The running `/metrics` server (prometheus_client's, in a daemon thread)."""

    host: str
    port: int
    _server: WSGIServer

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve_metrics(address: str, service: str) -> MetricsServer | None:
    """Serve this process's metrics on `address` (a `*_METRICS_LISTEN` setting);
    an empty address serves none."""
    if not address:
        return None
    host, port = parse_listen_address(address)
    try:
        server, _ = start_http_server(port, host)
    except OSError as error:
        raise RuntimeError(f"{service}: cannot serve metrics on {address}: {error.strerror or error}") from None
    running = MetricsServer(host, server.server_port, server)
    log.info("metrics listening", extra={"fields": {"service": service, "metrics_address": running.address}})
    return running


@contextlib.contextmanager
def metrics_served(address: str, service: str) -> Iterator[MetricsServer | None]:
    """`serve_metrics` for the life of a service's process."""
    running = serve_metrics(address, service)
    try:
        yield running
    finally:
        if running is not None:
            running.close()
