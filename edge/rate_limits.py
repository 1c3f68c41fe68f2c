"""Per-key and per-account rate limits: requests per minute and requests in flight.

The limits come from billing with the caller's authentication (cached with it).
The transports admit a generation with `RateLimiter.admit(caller)` before the
flow runs, so a refused request costs nothing and reaches no upstream.

Requests per minute count in a window that opens with the first request of a key
(or account) and lasts WINDOW_SECONDS; a refused request is not counted, so N+1
requests in a window get exactly one refusal, whose Retry-After is the time left
in the window. Concurrency counts the generations in flight.

With QUANTIZED_EDGE_REDIS_URL the counters live in Redis, shared by every edge
replica: one Lua script checks every limit and counts the request only when all
of them admit it. Without Redis, or while Redis is unreachable (under the
default policy), each edge counts in its own memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol

import redis.asyncio as redis_asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from quantized_runtime.errors import Reason, ServiceError
from quantized_runtime.request_context import current_request_id

from edge.errors import RETRY_AFTER_METADATA_KEY, service_unavailable
from edge.metrics import rate_limit_refused

log = logging.getLogger("quantized.edge.rate_limits")

WINDOW_SECONDS = 60
# How often the "Redis unavailable" warning is repeated while Redis stays down.
REDIS_WARNING_INTERVAL_SECONDS = 30.0

RedisUnavailablePolicy = Literal["local", "refuse"]


@dataclass(frozen=True, slots=True)
class Limit:
    """Zero means no limit."""

    requests_per_minute: int = 0
    max_concurrent_requests: int = 0


@dataclass(frozen=True, slots=True)
class LimitedScope:
    """One counter family: a key's or an account's. `kind` names it for the caller."""

    kind: str
    identifier: str
    limit: Limit

    @property
    def counter_key(self) -> str:
        return f"{self.kind}:{self.identifier}"


def rate_limited(scope: LimitedScope, what: str, retry_after_seconds: int) -> ServiceError:
    """The refusal, counted in the edge's metrics."""
    rate_limit_refused(scope.kind, what)
    return ServiceError(
        Reason.RATE_LIMITED,
        f"rate limit reached: the {scope.kind} is over its {what}; nothing was charged, "
        f"retry after {retry_after_seconds} s (request id {current_request_id.get()})",
        metadata={RETRY_AFTER_METADATA_KEY: str(retry_after_seconds)})


class Counter(Protocol):
    async def acquire(self, scopes: list[LimitedScope]) -> None:
        """Count one request in every scope, or raise RATE_LIMITED and count nothing."""

    async def release(self, scopes: list[LimitedScope]) -> None:
        """The request is no longer in flight."""


class LocalCounter:
    """This edge's own counters. Single event loop, so no locking; windows that
    have ended are dropped as new ones open, so memory follows the active callers."""

    def __init__(self) -> None:
        # counter key -> (requests counted, monotonic time the window ends)
        self._windows: dict[str, tuple[int, float]] = {}
        self._in_flight: dict[str, int] = {}

    async def acquire(self, scopes: list[LimitedScope]) -> None:
        now = time.monotonic()
        for scope in scopes:
            limit = scope.limit
            if limit.requests_per_minute:
                count, ends = self._windows.get(scope.counter_key, (0, 0.0))
                if ends > now and count >= limit.requests_per_minute:
                    raise rate_limited(scope, "requests per minute", max(1, math.ceil(ends - now)))
            if limit.max_concurrent_requests and \
                    self._in_flight.get(scope.counter_key, 0) >= limit.max_concurrent_requests:
                raise rate_limited(scope, "concurrent requests", 1)
        for scope in scopes:
            if scope.limit.requests_per_minute:
                self._count(scope.counter_key, now)
            if scope.limit.max_concurrent_requests:
                self._in_flight[scope.counter_key] = self._in_flight.get(scope.counter_key, 0) + 1

    def _count(self, key: str, now: float) -> None:
        count, ends = self._windows.get(key, (0, 0.0))
        if ends <= now:
            self._drop_ended_windows(now)
            count, ends = 0, now + WINDOW_SECONDS
        self._windows[key] = (count + 1, ends)

    def _drop_ended_windows(self, now: float) -> None:
        # Amortised: only when there are many, so a busy edge does not scan on every window.
        if len(self._windows) > 1024:
            for key in [key for key, (_, ends) in self._windows.items() if ends <= now]:
                del self._windows[key]

    async def release(self, scopes: list[LimitedScope]) -> None:
        for scope in scopes:
            if not scope.limit.max_concurrent_requests:
                continue
            left = self._in_flight.get(scope.counter_key, 0) - 1
            if left > 0:
                self._in_flight[scope.counter_key] = left
            else:
                self._in_flight.pop(scope.counter_key, None)


# KEYS: per scope, its window counter then its in-flight counter.
# ARGV: window ms, in-flight ttl ms, then per scope its requests per minute and
# its concurrency limit (0: none). Returns {0} when admitted and counted, or
# {scope number (1-based), 1 for the window or 2 for concurrency, ms to wait}.
_ACQUIRE_SCRIPT = """
local window_ms = tonumber(ARGV[1])
local in_flight_ttl_ms = tonumber(ARGV[2])
local scopes = #KEYS / 2
for i = 1, scopes do
  local rpm = tonumber(ARGV[1 + 2 * i])
  local concurrency = tonumber(ARGV[2 + 2 * i])
  if rpm > 0 then
    local count = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0')
    if count >= rpm then
      return {i, 1, redis.call('PTTL', KEYS[2 * i - 1])}
    end
  end
  if concurrency > 0 then
    local count = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
    if count >= concurrency then
      return {i, 2, 1000}
    end
  end
end
for i = 1, scopes do
  if tonumber(ARGV[1 + 2 * i]) > 0 then
    if redis.call('INCR', KEYS[2 * i - 1]) == 1 then
      redis.call('PEXPIRE', KEYS[2 * i - 1], window_ms)
    end
  end
  if tonumber(ARGV[2 + 2 * i]) > 0 then
    redis.call('INCR', KEYS[2 * i])
    redis.call('PEXPIRE', KEYS[2 * i], in_flight_ttl_ms)
  end
end
return {0}
"""

# KEYS: the in-flight counters to decrement; a counter that reaches zero is deleted.
_RELEASE_SCRIPT = """
for i = 1, #KEYS do
  if redis.call('DECR', KEYS[i]) <= 0 then
    redis.call('DEL', KEYS[i])
  end
end
return 0
"""

REDIS_KEY_PREFIX = "quantized:edge:limits:"


class RedisCounter:
    """Counters shared by every edge through Redis. An in-flight counter expires
    `in_flight_ttl_seconds` after its last request started, so an edge that died
    with requests in flight does not hold their slots for ever."""

    def __init__(self, client: redis_asyncio.Redis, in_flight_ttl_seconds: float) -> None:
        self._client = client
        self._acquire = client.register_script(_ACQUIRE_SCRIPT)
        self._release = client.register_script(_RELEASE_SCRIPT)
        self._in_flight_ttl_ms = int(in_flight_ttl_seconds * 1000)

    async def acquire(self, scopes: list[LimitedScope]) -> None:
        keys: list[str] = []
        args: list[int] = [WINDOW_SECONDS * 1000, self._in_flight_ttl_ms]
        for scope in scopes:
            keys += [f"{REDIS_KEY_PREFIX}rpm:{scope.counter_key}", f"{REDIS_KEY_PREFIX}busy:{scope.counter_key}"]
            args += [scope.limit.requests_per_minute, scope.limit.max_concurrent_requests]
        answer = await self._acquire(keys=keys, args=args)
        if answer[0] == 0:
            return
        scope, which, wait_ms = scopes[int(answer[0]) - 1], int(answer[1]), int(answer[2])
        what = "requests per minute" if which == 1 else "concurrent requests"
        raise rate_limited(scope, what, max(1, math.ceil(wait_ms / 1000)))

    async def release(self, scopes: list[LimitedScope]) -> None:
        keys = [f"{REDIS_KEY_PREFIX}busy:{scope.counter_key}" for scope in scopes
                if scope.limit.max_concurrent_requests]
        if keys:
            await self._release(keys=keys)

    async def close(self) -> None:
        await self._client.aclose()


class RateLimiter:
    """Admits generations against the caller's limits: in Redis when configured,
    else (or while Redis is unreachable, under the `local` policy) in this edge's memory."""

    def __init__(self, shared: RedisCounter | None, policy: RedisUnavailablePolicy,
                 retry_redis_after_seconds: float) -> None:
        self._shared = shared
        self._local = LocalCounter()
        self._policy = policy
        self._retry_redis_after = retry_redis_after_seconds
        self._redis_down_until = 0.0
        self._last_warning = -math.inf
        # Redis failures since start (each logged, at most every
        # REDIS_WARNING_INTERVAL_SECONDS); for a metrics exporter to read.
        self.redis_failures = 0

    @contextlib.asynccontextmanager
    async def admit(self, key_id: str, account_id: str, key_limit: Limit,
                    account_limit: Limit) -> AsyncIterator[None]:
        """Hold one request's place within the limits while the body runs, or raise
        RATE_LIMITED (or SERVICE_UNAVAILABLE when Redis is down under the `refuse` policy)."""
        scopes = [scope for scope in (LimitedScope("key", key_id, key_limit),
                                      LimitedScope("account", account_id, account_limit))
                  if scope.identifier and (scope.limit.requests_per_minute or scope.limit.max_concurrent_requests)]
        if not scopes:
            yield
            return
        counter = await self._acquire(scopes)
        try:
            yield
        finally:
            await self._release(counter, scopes)

    async def _acquire(self, scopes: list[LimitedScope]) -> Counter:
        shared = self._shared
        if shared is not None and time.monotonic() >= self._redis_down_until:
            try:
                await shared.acquire(scopes)
                return shared
            except (RedisError, OSError, asyncio.TimeoutError) as error:
                self._redis_failed("acquire", error)
        if shared is not None and self._policy == "refuse":
            raise service_unavailable("rate limit", current_request_id.get())
        await self._local.acquire(scopes)
        return self._local

    async def _release(self, counter: Counter, scopes: list[LimitedScope]) -> None:
        try:
            await counter.release(scopes)
        except (RedisError, OSError, asyncio.TimeoutError) as error:
            # The slot frees itself when its counter expires (in_flight_ttl).
            self._redis_failed("release", error)

    def _redis_failed(self, operation: str, error: BaseException) -> None:
        self.redis_failures += 1
        now = time.monotonic()
        self._redis_down_until = now + self._retry_redis_after
        if now - self._last_warning >= REDIS_WARNING_INTERVAL_SECONDS:
            self._last_warning = now
            log.warning("redis unavailable for rate limits", extra={"fields": {
                "operation": operation, "error": type(error).__name__, "policy": self._policy,
                "redis_failures_total": self.redis_failures}})

    async def close(self) -> None:
        if self._shared is not None:
            await self._shared.close()


def redis_client(redis_url: str, timeout_seconds: float) -> redis_asyncio.Redis:
    """A client that connects on first use. No retries inside it: a failure is
    reported at once, and its user decides what to do and when to try again."""
    return redis_asyncio.Redis.from_url(
        redis_url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds,
        retry=Retry(NoBackoff(), 0), retry_on_timeout=False)


def open_rate_limiter(redis_url: str | None, policy: RedisUnavailablePolicy, timeout_seconds: float,
                      retry_redis_after_seconds: float, in_flight_ttl_seconds: float) -> RateLimiter:
    """The limiter the settings ask for."""
    shared = RedisCounter(redis_client(redis_url, timeout_seconds), in_flight_ttl_seconds) if redis_url else None
    return RateLimiter(shared, policy, retry_redis_after_seconds)
