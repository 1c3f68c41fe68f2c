"""What the edge reports about each request: its Prometheus metrics and its one
JSON log line (the shared gRPC and process metrics: quantized_runtime.metrics).

A transport makes a `RequestRecord` when a request arrives, the flow fills in
what it learns (the caller, the catalog's model and provider, the upstream's
time, the images and the credits charged) and the transport ends it with the
status it answered, which writes the log line and the metrics at once.

Labels stay bounded: `model` and `provider` are set only from the catalog's
answer (an unknown model name is whatever the caller sent, so it is never a
label), `route` is a route of the API, never the path asked for. Spend per
account and key is not a label: each increment of the charged counter carries
the account id and key id as an exemplar (OpenMetrics; Prometheus keeps them
with `--enable-feature=exemplar-storage`), and per-key totals are billing's
usage records. No token, key or credential is ever recorded: the key id is
billing's identifier of the key, not the key.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Generic, TypeVar

from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from quantized_runtime.metrics import LATENCY_BUCKETS
from quantized_runtime.request_context import current_request_id

if TYPE_CHECKING:
    from edge.leases import CreditLeases

log = logging.getLogger("quantized.edge.request")

# The edge's own time is usually well under a millisecond.
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

REQUESTS = Counter(
    "quantized_edge_requests",
    "Requests the edge answered, by API route, catalog model, provider and status class (2xx, 4xx, 5xx).",
    ("route", "model", "provider", "status_class"))
REQUEST_SECONDS = Histogram(
    "quantized_edge_request_duration_seconds",
    "Time from a request's arrival to its answer, by API route.",
    ("route",), buckets=LATENCY_BUCKETS)
UPSTREAM_SECONDS = Histogram(
    "quantized_edge_upstream_duration_seconds",
    "Time the upstream took for a generation, as provider_svc measured it, by provider.",
    ("provider",), buckets=LATENCY_BUCKETS)
OVERHEAD_SECONDS = Histogram(
    "quantized_edge_overhead_duration_seconds",
    "The router's added latency: a generation's total time at the edge less its upstream time, by API route.",
    ("route",), buckets=OVERHEAD_BUCKETS)
IMAGES = Counter(
    "quantized_edge_images",
    "Images returned to callers, by model, provider and result (generated, or flagged by the upstream's filter).",
    ("model", "provider", "result"))
CHARGED = Counter(
    "quantized_edge_charged_microcredits",
    "Micro-credits charged for generations, by model; each increment carries the account id and "
    "key id as an exemplar.",
    ("model",))
CACHE_LOOKUPS = Counter(
    "quantized_edge_cache_lookups",
    "Lookups in the edge's caches (auth, route, quote, models), by result (hit or miss).",
    ("cache", "result"))
RATE_LIMITED = Counter(
    "quantized_edge_rate_limited_requests",
    "Requests refused for a rate limit, by scope (key or account) and limit.",
    ("scope", "limit"))


class CacheMetrics:
    """One cache's hit and miss counters, bound once."""

    __slots__ = ("hit", "miss")

    def __init__(self, cache: str) -> None:
        self.hit = CACHE_LOOKUPS.labels(cache, "hit")
        self.miss = CACHE_LOOKUPS.labels(cache, "miss")


def rate_limit_refused(scope: str, limit: str) -> None:
    RATE_LIMITED.labels(scope, limit.replace(" ", "_")).inc()


def status_class(status: int) -> str:
    return f"{status // 100}xx"


MetricT = TypeVar("MetricT", Counter, Histogram)


class _Children(Generic[MetricT]):
    """A metric's labelled children, each bound on first use and kept: a request
    looks its child up in a dict instead of building it again."""

    __slots__ = ("_metric", "_bound")

    def __init__(self, metric: MetricT) -> None:
        self._metric = metric
        self._bound: dict[tuple[str, ...], MetricT] = {}

    def __call__(self, *labels: str) -> MetricT:
        child = self._bound.get(labels)
        if child is None:
            child = self._bound[labels] = self._metric.labels(*labels)
        return child


_requests = _Children(REQUESTS)
_durations = _Children(REQUEST_SECONDS)
_upstreams = _Children(UPSTREAM_SECONDS)
_overheads = _Children(OVERHEAD_SECONDS)
_images = _Children(IMAGES)
_charged = _Children(CHARGED)


class RequestRecord:
    """One request as the edge reports it; see the module's docstring."""

    __slots__ = ("route", "_started", "account_id", "key_id", "model", "provider", "images", "flagged",
                 "credits", "upstream_seconds", "replayed")

    def __init__(self, route: str) -> None:
        self.route = route
        self._started = time.perf_counter()
        self.account_id = ""
        self.key_id = ""
        # The catalog's model and the provider that served (or last failed) the request.
        self.model = ""
        self.provider = ""
        self.images = 0
        self.flagged = 0
        self.credits = 0
        self.upstream_seconds: float | None = None
        # Answered from a stored response (Idempotency-Key): nothing generated or charged.
        self.replayed = False

    def finish(self, status: int | str, status_class: str, **fields: object) -> None:
        """The request was answered with `status` (an HTTP status, or a gRPC call's
        error reason); `fields` are the transport's own for the log line."""
        total = time.perf_counter() - self._started
        route, model, provider = self.route, self.model, self.provider
        _requests(route, model, provider, status_class).inc()
        _durations(route).observe(total)
        upstream = self.upstream_seconds
        if upstream is not None:
            _upstreams(provider).observe(upstream)
            _overheads(route).observe(max(total - upstream, 0.0))
        if self.images:
            _images(model, provider, "generated").inc(self.images)
        if self.flagged:
            _images(model, provider, "flagged").inc(self.flagged)
        if self.credits:
            exemplar = {"account_id": self.account_id}
            if self.key_id:
                exemplar["key_id"] = self.key_id
            _charged(model).inc(self.credits, exemplar=exemplar)
        log.info("request", extra={"fields": {
            **fields, "request_id": current_request_id.get(), "route": route, "status": status,
            "account_id": self.account_id, "key_id": self.key_id, "model": model, "provider": provider,
            "images": self.images, "credits": self.credits, "replayed": self.replayed,
            "upstream_ms": None if upstream is None else round(upstream * 1000, 3),
            "total_ms": round(total * 1000, 3)}})


class LeaseAdmissionCollector(Collector):
    """The credit leases' admission counters (edge/leases.py `CreditLeases`), read at each scrape."""

    def __init__(self, leases: CreditLeases) -> None:
        self._leases = leases

    def collect(self) -> Iterable[CounterMetricFamily]:
        admitted = CounterMetricFamily(
            "quantized_edge_lease_admissions",
            "Requests of limited accounts admitted, by where their money is held: lease (the "
            "edge's credit lease, in memory) or hold (an exact hold at billing).",
            labels=("where",))
        on_lease = self._leases.admitted_locally
        admitted.add_metric(("lease",), on_lease)
        admitted.add_metric(("hold",), self._leases.admitted - on_lease)
        yield admitted
