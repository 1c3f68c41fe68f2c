"""The service's own bounded retry: 429/5xx only, with backoff, inside the deadline.

SDK-internal retries are off in every adapter, so this is the only retry layer.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from provider_svc.upstream_errors import UpstreamError, timed_out

T = TypeVar("T")

# Do not start an attempt with less than this left: it could only time out.
_MIN_ATTEMPT_SECONDS = 0.05


class RequestDeadline:
    """Time left for upstream work: the caller's time left (its stream call's
    `timeout_seconds`; None: unbounded), capped per attempt by the configured
    upstream timeout."""

    def __init__(self, caller_time_left: float | None, upstream_timeout: float) -> None:
        self._upstream_timeout = upstream_timeout
        budget = caller_time_left if caller_time_left is not None else float("inf")
        self._ends_at = time.monotonic() + budget

    def total_remaining(self) -> float:
        return max(self._ends_at - time.monotonic(), 0.0)

    def remaining(self) -> float:
        return min(self.total_remaining(), self._upstream_timeout)


async def with_retry(attempt: Callable[[], Awaitable[T]], *, provider: str, deadline: RequestDeadline,
                     retries: int, backoff_seconds: float) -> T:
    """Run `attempt`, retrying a retryable UpstreamError up to `retries` times."""
    failures = 0
    while True:
        if deadline.remaining() < _MIN_ATTEMPT_SECONDS:
            raise timed_out(provider)
        try:
            return await attempt()
        except UpstreamError as error:
            if not error.retryable or failures >= retries:
                raise
            failures += 1
            # Full jitter keeps a burst of throttled callers from retrying in step.
            pause = random.uniform(0, backoff_seconds * 2 ** (failures - 1))
            if deadline.total_remaining() - pause < _MIN_ATTEMPT_SECONDS:
                raise
            await asyncio.sleep(pause)
