"""The dependency watch behind every service's health (quantized_runtime.health)
and the database outage rules (quantized_runtime.database_health): the grace
period, flapping, a suspicion probed at once, the listeners, a stopping server
that stays NOT_SERVING, and which errors count as a lost database."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from grpc_health.v1 import health, health_pb2
from sqlalchemy import exc as sqlalchemy_errors

from quantized_runtime.database_health import DATABASE, DatabaseGuard, database_unreachable
from quantized_runtime.errors import Reason, ServiceError
from quantized_runtime.health import Dependency, DependencyWatch, serve_health_by_dependencies
from quantized_runtime.server import create_server
from tests.polling import eventually

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Switch:
    """A probe that fails while `up` is False, counting its calls."""

    def __init__(self) -> None:
        self.up = True
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1
        if not self.up:
            raise ConnectionRefusedError("refused")


def _watch(grace: float, clock: FakeClock, **options: float) -> tuple[DependencyWatch, Switch]:
    switch = Switch()
    return DependencyWatch([Dependency("billing", switch, grace)], clock=clock, **options), switch


def test_a_dependency_is_down_only_once_it_failed_for_its_whole_grace_period():
    clock = FakeClock()
    watch, _ = _watch(3.0, clock)
    assert not watch.record("billing", ok=False)
    clock.now += 2.9
    assert not watch.record("billing", ok=False)
    assert watch.down == frozenset()
    clock.now += 0.1
    assert watch.record("billing", ok=False)
    assert watch.down == {"billing"}
    # One success is enough to be back.
    assert watch.record("billing", ok=True)
    assert watch.down == frozenset()


def test_without_a_grace_period_the_first_failure_counts():
    watch, _ = _watch(0.0, FakeClock())
    assert watch.record("billing", ok=False)
    assert watch.down == {"billing"}


def test_a_flapping_dependency_inside_its_grace_never_turns_down():
    clock = FakeClock()
    watch, _ = _watch(3.0, clock)
    for _ in range(20):
        watch.record("billing", ok=False)
        clock.now += 1.0
        watch.record("billing", ok=True)
        clock.now += 1.0
        assert watch.down == frozenset()


def test_a_dependency_down_and_flapping_back_follows_each_success_and_starts_its_grace_again():
    clock = FakeClock()
    watch, _ = _watch(3.0, clock)
    watch.record("billing", ok=False)
    clock.now += 3.0
    watch.record("billing", ok=False)
    assert watch.down == {"billing"}
    watch.record("billing", ok=True)
    clock.now += 1.0
    # A new failure after the recovery has its own grace period.
    watch.record("billing", ok=False)
    assert watch.down == frozenset()


async def test_listeners_hear_each_change_once_and_a_hanging_probe_counts_as_a_failure():
    gate = asyncio.Event()

    async def hangs_while_closed() -> None:
        await gate.wait()

    heard: list[frozenset[str]] = []

    async def listen(down: frozenset[str]) -> None:
        heard.append(down)

    watch = DependencyWatch([Dependency("provider", hangs_while_closed)], timeout_seconds=0.05)
    watch.on_change(listen)
    await watch.probe_all()
    await watch.probe_all()
    assert heard == [frozenset({"provider"})]
    gate.set()
    await watch.probe_all()
    assert heard == [frozenset({"provider"}), frozenset()]


async def test_a_suspicion_is_probed_at_once_not_at_the_next_tick():
    switch = Switch()
    watch = DependencyWatch([Dependency(DATABASE, switch)], interval_seconds=3600)
    watch.start()
    try:
        await eventually(lambda: switch.calls == 1)
        switch.up = False
        watch.suspect(DATABASE)
        await eventually(lambda: watch.down == {DATABASE})
        # A name the watch does not know is ignored.
        watch.suspect("elsewhere")
    finally:
        await watch.stop()


async def test_each_health_name_is_serving_while_none_of_its_dependencies_is_down():
    servicer = health.aio.HealthServicer()
    apply = serve_health_by_dependencies(servicer, {"": ("billing", "provider"), "admin": ("billing",),
                                                    "public": ()})

    async def status(name: str) -> int:
        reply = await servicer.Check(health_pb2.HealthCheckRequest(service=name), None)
        return reply.status

    await apply(frozenset({"provider"}))
    assert [await status(name) for name in ("", "admin", "public")] == [NOT_SERVING, SERVING, SERVING]
    await apply(frozenset({"billing"}))
    assert [await status(name) for name in ("", "admin", "public")] == [NOT_SERVING, NOT_SERVING, SERVING]
    await apply(frozenset())
    assert [await status(name) for name in ("", "admin", "public")] == [SERVING, SERVING, SERVING]


async def test_a_stopping_server_stays_not_serving_whatever_a_watch_says():
    running = await create_server("127.0.0.1:0", [], ["quantized.test.v1.Thing"], 1024 * 1024)
    apply = serve_health_by_dependencies(running.health, {"": ("database",)})
    await running.stop(0)
    await apply(frozenset())
    reply = await running.health.Check(health_pb2.HealthCheckRequest(service=""), None)
    assert reply.status == NOT_SERVING


@pytest.mark.parametrize("error", [
    ConnectionRefusedError(111, "refused"),
    TimeoutError(),
    asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.CannotConnectNowError("the database system is starting up"),
    asyncpg.AdminShutdownError("terminating connection due to administrator command"),
    sqlalchemy_errors.DBAPIError("SELECT 1", None, Exception("gone"), connection_invalidated=True),
])
def test_lost_or_refused_connections_are_a_database_outage(error):
    assert database_unreachable(error)
    wrapped = RuntimeError("while reserving")
    wrapped.__cause__ = error
    assert database_unreachable(wrapped)


@pytest.mark.parametrize("error", [
    asyncpg.UniqueViolationError("duplicate key"),
    sqlalchemy_errors.DBAPIError("SELECT 1", None, Exception("syntax"), connection_invalidated=False),
    ValueError("a bug"),
])
def test_other_database_errors_are_not_an_outage(error):
    assert not database_unreachable(error)


async def test_the_guard_answers_service_unavailable_for_an_outage_and_leaves_bugs_alone():
    switch = Switch()
    watch = DependencyWatch([Dependency(DATABASE, switch)], interval_seconds=3600)
    guard = DatabaseGuard("billing", watch)
    with pytest.raises(ServiceError) as caught:
        async with guard():
            raise asyncpg.ConnectionDoesNotExistError("connection was closed")
    assert caught.value.reason == Reason.SERVICE_UNAVAILABLE
    assert caught.value.message == "the billing database is unavailable; retry shortly"
    with pytest.raises(ValueError):
        async with guard():
            raise ValueError("a bug")


@pytest.mark.parametrize("database_up", [True, False])
async def test_a_driver_state_error_is_an_outage_only_when_a_probe_confirms_it(database_up):
    switch = Switch()
    switch.up = database_up
    watch = DependencyWatch([Dependency(DATABASE, switch)], interval_seconds=3600)
    guard = DatabaseGuard("billing", watch)
    with pytest.raises(Exception) as caught:
        async with guard():
            raise asyncpg.InterfaceError("cannot call Transaction.__aexit__(): the underlying connection is closed")
    if database_up:
        assert isinstance(caught.value, asyncpg.InterfaceError)
        assert watch.down == frozenset()
    else:
        assert isinstance(caught.value, ServiceError) and caught.value.reason == Reason.SERVICE_UNAVAILABLE
        assert watch.down == {DATABASE}


async def test_callers_asking_at_once_share_one_probe():
    gate = asyncio.Event()
    calls = 0

    async def slow_probe() -> None:
        nonlocal calls
        calls += 1
        await gate.wait()

    watch = DependencyWatch([Dependency(DATABASE, slow_probe)])
    asking = [asyncio.create_task(watch.is_up(DATABASE)) for _ in range(5)]
    await asyncio.sleep(0.01)
    gate.set()
    assert await asyncio.gather(*asking) == [True] * 5
    assert calls == 1


def test_a_watch_down_until_seen_is_down_until_each_first_success_then_has_its_grace():
    clock = FakeClock()
    switch = Switch()
    watch = DependencyWatch([Dependency("billing", switch, 3.0), Dependency("provider", switch, 3.0)],
                            clock=clock, down_until_seen=True)
    assert watch.down == {"billing", "provider"}
    assert not watch.record("billing", ok=False)
    assert watch.record("billing", ok=True)
    assert watch.down == {"provider"}
    watch.record("provider", ok=True)
    clock.now += 1.0
    watch.record("billing", ok=False)
    assert watch.down == frozenset()
