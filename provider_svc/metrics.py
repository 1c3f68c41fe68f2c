"""provider_svc's own Prometheus metrics (the shared ones: quantized_runtime.metrics).

Labels are the catalog's provider slug, the adapter family and an outcome
(`OK` or the error reason): sets the operator's catalog and the contract bound.
"""

from __future__ import annotations

import asyncio
import time

from prometheus_client import Counter, Histogram

from provider_svc.domain import GenerationResult
from quantized_runtime.errors import Reason, ServiceError
from quantized_runtime.metrics import LATENCY_BUCKETS

UPSTREAM_REQUESTS = Counter(
    "quantized_provider_upstream_requests",
    "Attempts at an upstream call (each retry is one), by provider, adapter family and status "
    "(OK or the error reason).",
    ("provider", "family", "status"))
UPSTREAM_SECONDS = Histogram(
    "quantized_provider_upstream_request_duration_seconds",
    "Time one upstream attempt took, by provider and adapter family.",
    ("provider", "family"), buckets=LATENCY_BUCKETS)
UPSTREAM_RETRIES = Counter(
    "quantized_provider_upstream_retries",
    "Upstream attempts that were retries of a failed one, by provider and adapter family.",
    ("provider", "family"))
UPSTREAM_RECEIVED_BYTES = Counter(
    "quantized_provider_upstream_received_image_bytes",
    "Bytes of image data received from upstreams (decoded), by provider and adapter family.",
    ("provider", "family"))
GENERATE_CALLS = Counter(
    "quantized_provider_generate_calls",
    "Generate calls served on GenerateStream, by outcome (OK, an error reason, CANCELLED or UNSENT).",
    ("outcome",))
GENERATE_CALL_SECONDS = Histogram(
    "quantized_provider_generate_call_duration_seconds",
    "Time from a Generate call's arrival on GenerateStream to its last answer written.",
    buckets=LATENCY_BUCKETS)


class _UpstreamChildren:
    """One provider and family's labelled children, bound once and kept."""

    __slots__ = ("provider", "family", "seconds", "retries", "received", "by_status")

    def __init__(self, provider: str, family: str) -> None:
        self.provider = provider
        self.family = family
        self.seconds = UPSTREAM_SECONDS.labels(provider, family)
        self.retries = UPSTREAM_RETRIES.labels(provider, family)
        self.received = UPSTREAM_RECEIVED_BYTES.labels(provider, family)
        self.by_status: dict[str, Counter] = {}

    def requests(self, status: str) -> Counter:
        child = self.by_status.get(status)
        if child is None:
            child = self.by_status[status] = UPSTREAM_REQUESTS.labels(self.provider, self.family, status)
        return child


_upstreams: dict[tuple[str, str], _UpstreamChildren] = {}
_generate_calls: dict[str, Counter] = {}


class UpstreamMetrics:
    """The upstream attempts of one generation, for one provider and family."""

    __slots__ = ("_children", "_attempts")

    def __init__(self, provider: str, family: str) -> None:
        children = _upstreams.get((provider, family))
        if children is None:
            children = _upstreams[(provider, family)] = _UpstreamChildren(provider, family)
        self._children = children
        self._attempts = 0

    def attempt_started(self) -> float:
        self._attempts += 1
        if self._attempts > 1:
            self._children.retries.inc()
        return time.perf_counter()

    def attempt_ended(self, started: float, error: BaseException | None) -> None:
        self._children.seconds.observe(time.perf_counter() - started)
        if error is None:
            status = "OK"
        elif isinstance(error, asyncio.CancelledError):
            status = "CANCELLED"
        elif isinstance(error, ServiceError):
            status = error.reason.value
        else:
            status = Reason.INTERNAL.value
        self._children.requests(status).inc()

    def received(self, result: GenerationResult) -> None:
        self._children.received.inc(sum(len(image.data) for image in result.images))


def generate_call_ended(outcome: str, seconds: float) -> None:
    child = _generate_calls.get(outcome)
    if child is None:
        child = _generate_calls[outcome] = GENERATE_CALLS.labels(outcome)
    child.inc()
    GENERATE_CALL_SECONDS.observe(seconds)
