"""Health that follows the dependencies a service cannot work without.

A `DependencyWatch` probes each `Dependency` every `PROBE_INTERVAL_SECONDS`, each
probe bounded by `PROBE_TIMEOUT_SECONDS`. A dependency whose probes have failed
without a break for its grace period is down; one probe that succeeds makes it up
again. A request path that meets a connection failure calls `suspect`, which
probes at once instead of at the next tick, so the status turns within moments
while a stale pooled connection alone (the next probe succeeds) turns nothing.

`serve_health_by_dependencies` keeps each gRPC health name SERVING exactly while
none of the dependencies it needs is down. After `RunningServer.stop` began, the
health servicer ignores every change (its graceful shutdown), so a watch never
turns a stopping server SERVING again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

log = logging.getLogger("quantized.health")

PROBE_INTERVAL_SECONDS = 1.0
PROBE_TIMEOUT_SECONDS = 1.0
# Probe rounds asked for by `suspect` come at most this often, so a burst of
# failing requests does not turn into a burst of probes.
MIN_PROBE_GAP_SECONDS = 0.1

DownListener = Callable[[frozenset[str]], Awaitable[None]]


class NotServing(Exception):
    """A peer answered its health check with a status other than SERVING."""


@dataclass(frozen=True)
class Dependency:
    """Something the service cannot work without. `probe` raises (or times out)
    when the dependency cannot be used; `grace_seconds` is how long it may keep
    failing before it counts as down (0: at the first failure)."""

    name: str
    probe: Callable[[], Awaitable[object]]
    grace_seconds: float = 0.0


class DependencyWatch:
    def __init__(self, dependencies: Sequence[Dependency], *,
                 interval_seconds: float = PROBE_INTERVAL_SECONDS,
                 timeout_seconds: float = PROBE_TIMEOUT_SECONDS,
                 clock: Callable[[], float] = time.monotonic,
                 down_until_seen: bool = False) -> None:
        """`down_until_seen`: every dependency starts down, until its first probe
        succeeds (no grace before that), for a service that must not report SERVING
        before it has reached what it needs."""
        self._dependencies = {dependency.name: dependency for dependency in dependencies}
        self._interval = interval_seconds
        self._timeout = timeout_seconds
        self._clock = clock
        self._failing_since: dict[str, float | None] = dict.fromkeys(
            self._dependencies, -math.inf if down_until_seen else None)
        self._down: frozenset[str] = frozenset(self._dependencies) if down_until_seen else frozenset()
        self._listeners: list[DownListener] = []
        self._probe_now = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # One probe per dependency at a time: callers asking meanwhile share its answer.
        self._in_flight: dict[str, asyncio.Future[bool]] = {}

    @property
    def down(self) -> frozenset[str]:
        """The dependencies down now, by name."""
        return self._down

    def on_change(self, listener: DownListener) -> None:
        """`listener(down)` runs after every change of `down`."""
        self._listeners.append(listener)

    def record(self, name: str, ok: bool) -> bool:
        """Note one probe's result; True when that changed `down`."""
        now = self._clock()
        if ok:
            self._failing_since[name] = None
        elif self._failing_since[name] is None:
            self._failing_since[name] = now
        down = frozenset(
            dependency for dependency, since in self._failing_since.items()
            if since is not None and now - since >= self._dependencies[dependency].grace_seconds)
        if down == self._down:
            return False
        for dependency in sorted(down - self._down):
            log.warning("dependency down", extra={"fields": {"dependency": dependency}})
        for dependency in sorted(self._down - down):
            log.info("dependency back", extra={"fields": {"dependency": dependency}})
        self._down = down
        return True

    def suspect(self, name: str) -> None:
        """A request path saw `name` fail to connect: probe now, not at the next tick."""
        if name in self._dependencies:
            self._probe_now.set()

    async def probe_all(self) -> None:
        """One round: every dependency probed at once, then the listeners told of a change."""
        names = list(self._dependencies)
        results = await asyncio.gather(*(self._probe(name) for name in names))
        changed = [self.record(name, ok) for name, ok in zip(names, results, strict=True)]
        if any(changed):
            await self._tell_listeners()

    async def is_up(self, name: str) -> bool:
        """Probe `name` now (sharing a probe already running) and note the result.
        A name the watch does not know is taken as up."""
        if name not in self._dependencies:
            return True
        ok = await self._probe(name)
        if self.record(name, ok):
            await self._tell_listeners()
        return ok

    async def _tell_listeners(self) -> None:
        for listener in self._listeners:
            await listener(self._down)

    async def _probe(self, name: str) -> bool:
        running = self._in_flight.get(name)
        if running is None:
            running = asyncio.ensure_future(self._probe_once(name))
            self._in_flight[name] = running
            running.add_done_callback(lambda _: self._in_flight.pop(name, None))
        # Shielded: a caller that gives up does not cancel the probe the others await.
        return await asyncio.shield(running)

    async def _probe_once(self, name: str) -> bool:
        try:
            async with asyncio.timeout(self._timeout):
                await self._dependencies[name].probe()
        except Exception as exc:  # noqa: BLE001 - whatever the probe raises, the dependency is unusable
            # The type only: a driver's message may carry a host name or a user.
            log.debug("probe failed", extra={"fields": {"dependency": name,
                                                         "error": type(exc).__name__}})
            return False
        return True

    def start(self) -> None:
        """Probe in the background; a watch with nothing to watch runs no task."""
        if not self._dependencies:
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="dependency-watch")

    async def stop(self) -> None:
        """Stop probing, a probe in flight included (it may be opening a connection)."""
        for running in (self._task, *self._in_flight.values()):
            if running is not None:
                running.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running
        self._task = None

    async def _run(self) -> None:
        while True:
            # Cleared before the round: a suspicion raised during it asks for another.
            self._probe_now.clear()
            await self.probe_all()
            await asyncio.sleep(MIN_PROBE_GAP_SECONDS)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, self._interval - MIN_PROBE_GAP_SECONDS)):
                    await self._probe_now.wait()


def serve_health_by_dependencies(health_servicer: health.aio.HealthServicer,
                                 needs: Mapping[str, Iterable[str]]) -> DownListener:
    """A listener that sets each health name in `needs` SERVING while none of the
    dependencies listed for it is down, NOT_SERVING otherwise."""
    required = {service: frozenset(names) for service, names in needs.items()}

    async def apply(down: frozenset[str]) -> None:
        for service, dependencies in required.items():
            status = (health_pb2.HealthCheckResponse.NOT_SERVING if dependencies & down
                      else health_pb2.HealthCheckResponse.SERVING)
            await health_servicer.set(service, status)

    return apply


def grpc_health_probe(channel: grpc.aio.Channel, service_name: str) -> Callable[[], Awaitable[None]]:
    """A probe of a peer's standard gRPC health check for `service_name` on an open
    channel: it fails when the peer is unreachable or not SERVING."""
    stub = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service=service_name)

    async def probe() -> None:
        reply = await stub.Check(request, timeout=PROBE_TIMEOUT_SECONDS)
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            raise NotServing(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    return probe
