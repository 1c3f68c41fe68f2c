"""A small time-to-live cache for read-mostly answers (authentication, routes, quotes)."""

from __future__ import annotations

import time
from typing import Any, Generic, Hashable, TypeVar

from edge.metrics import CacheMetrics

ValueT = TypeVar("ValueT")

MISSING: Any = object()


class TtlCache(Generic[ValueT]):
    """Entries expire `ttl_seconds` after they were stored; the oldest go first when full.

    A ttl of 0 disables caching. Single event loop only (no locking needed).
    With `metrics`, each lookup counts as a hit or a miss.
    """

    def __init__(self, ttl_seconds: float, max_entries: int, metrics: CacheMetrics | None = None) -> None:
        self._ttl = ttl_seconds
        self._max_entries = max_entries
        self._entries: dict[Hashable, tuple[float, ValueT]] = {}
        self._metrics = metrics

    def get(self, key: Hashable) -> ValueT:
        """The live value for key, or MISSING."""
        value = self._lookup(key)
        if self._metrics is not None:
            (self._metrics.miss if value is MISSING else self._metrics.hit).inc()
        return value

    def _lookup(self, key: Hashable) -> ValueT:
        entry = self._entries.get(key)
        if entry is None:
            return MISSING
        if entry[0] <= time.monotonic():
            del self._entries[key]
            return MISSING
        return entry[1]

    def put(self, key: Hashable, value: ValueT) -> None:
        if self._ttl <= 0:
            return
        self._entries.pop(key, None)
        while len(self._entries) >= self._max_entries:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = (time.monotonic() + self._ttl, value)
