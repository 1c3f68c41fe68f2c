"""Scale-out, exact (issue 18): 2 edges, 2 billings, 2 provider_svcs and 1 catalog
on one PostgreSQL database, the edges balancing over the backends' replicas, load
through both edges on shared accounts.

- SIGKILL one replica of each service in turn, then a billing and a provider_svc
  together: requests in flight on a killed replica may fail (503
  service_unavailable, or cut off with its edge); requests started after it are
  served by the survivors; no charge is lost or doubled, a failed request is
  charged nothing, and each account's ledger balances.
- A rolling upgrade of every replica under load fails no request.

Each test prints its figures: requests, images, credits, drift, failures by status.
(The catalog runs one replica: killing it is an outage, not a scale-out case.)
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from tests.e2e.money_stack import Answer, audit, body
from tests.e2e.replica_stack import EdgeBalancer, ReplicaStack
from tests.fake_upstreams import FakeOpenAI

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

ACCOUNTS = 2
CALLERS_PER_ACCOUNT = 4
# Holds of requests cut off with a killed edge or billing are reaped within the test.
SHORT_HOLD_TTL_SECONDS = 3.0
REAPER_INTERVAL_SECONDS = 0.2
# A request started this long after a kill must be served by the survivors.
FAILOVER_SECONDS = 1.0
ANSWERS_BETWEEN_STEPS = 40
PROGRESS_TIMEOUT_SECONDS = 60.0
# The edge's preStop pause in deploy/kubernetes, shortened: the balancer drops an edge
# at once here.
ENDPOINT_REMOVAL_SECONDS = 0.5
OPENING_IMAGES = 100_000


@pytest.fixture
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        fake.always(fake.success)
        yield fake


@pytest.fixture
async def stack(tmp_path, postgres_url: str, upstream: FakeOpenAI) -> AsyncIterator[ReplicaStack]:
    root = tmp_path / "stack"
    root.mkdir()
    # A killed edge's holds and leases come back when they expire: short ones, so
    # the books settle within the test.
    running = ReplicaStack(root, postgres_url, upstream, hold_ttl_seconds=SHORT_HOLD_TTL_SECONDS,
                           lease_ttl_seconds=SHORT_HOLD_TTL_SECONDS,
                           reaper_interval_seconds=REAPER_INTERVAL_SECONDS)
    try:
        yield await running.start()
    finally:
        await running.stop()


@dataclass(frozen=True)
class Sent:
    account: int
    started: float
    answer: Answer


class SharedLoad:
    """CALLERS_PER_ACCOUNT callers per account, each posting one request after
    another through its account's balancer (so through both edges) until stopped."""

    def __init__(self, balancers: list[EdgeBalancer]) -> None:
        self.balancers = balancers
        self.sent: list[Sent] = []
        self.refused = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> SharedLoad:
        self._tasks = [asyncio.create_task(self._caller(account))
                       for account in range(len(self.balancers)) for _ in range(CALLERS_PER_ACCOUNT)]
        return self

    async def _caller(self, account: int) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            answer = await self.balancers[account].post(body("a hedgehog"))
            if answer is None:
                self.refused += 1  # no edge took it, so nothing was sent
                await asyncio.sleep(0.05)
                continue
            self.sent.append(Sent(account, started, answer))

    async def more(self, answers: int) -> None:
        target = len(self.sent) + answers
        give_up = time.monotonic() + PROGRESS_TIMEOUT_SECONDS
        while len(self.sent) < target:
            assert time.monotonic() < give_up, "the callers stopped making progress"
            assert not any(task.done() for task in self._tasks), [t.exception() for t in self._tasks if t.done()]
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def answers(self, account: int | None = None) -> list[Answer]:
        return [sent.answer for sent in self.sent if account is None or sent.account == account]


def failures(answers: list[Answer]) -> dict[str, int]:
    return dict(Counter("cut_off" if answer.status is None else f"{answer.status} {answer.error_type}"
                        for answer in answers if answer.status != 200))


async def _accounts(stack: ReplicaStack, price: int) -> list[tuple[str, str]]:
    return [await stack.create_account(OPENING_IMAGES * price, name=f"shared-{index}") for index in range(ACCOUNTS)]


async def _audited(stack: ReplicaStack, load: SharedLoad, accounts: list[tuple[str, str]], price: int,
                   show) -> None:
    """Each account's books checked request by request; the figures printed, then checked."""
    totals = Counter()
    problems: list[str] = []
    for index, (account_id, _) in enumerate(accounts):
        books = await stack.settled_books(account_id, SHORT_HOLD_TTL_SECONDS + 15)
        result = audit(load.answers(index), books, price, OPENING_IMAGES * price)
        problems += result.problems
        totals.update(requests=result.requests, images=result.delivered, credits=result.charged,
                      drift=abs(result.drift), cut_off_charged=result.cut_off_charged)
    show(f"requests={totals['requests']} images={totals['images']} credits={totals['credits']} "
         f"drift={totals['drift']} cut_off_charged={totals['cut_off_charged']} refused={load.refused} "
         f"failures={failures(load.answers())} problems={len(problems)}")
    assert problems == []
    assert totals["drift"] == 0


@pytest.fixture
def figures(capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest):
    def show(line: str) -> None:
        with capsys.disabled():
            print(f"\n[figures] {request.node.name}: {line}")
    return show


# One replica of each service at a time, then a billing and a provider_svc together.
KILLS = [[("billing", 0)], [("provider", 0)], [("edge", 0)], [("billing", 1), ("provider", 1)]]


async def test_sigkill_of_replicas_mid_load_moves_requests_to_survivors_and_loses_no_charge(stack, figures):
    price = await stack.price_per_image()
    accounts = await _accounts(stack, price)
    balancers = [EdgeBalancer(stack.edges, api_key, CALLERS_PER_ACCOUNT) for _, api_key in accounts]
    load = SharedLoad(balancers).start()
    steps = []
    try:
        for victims in KILLS:
            await load.more(ANSWERS_BETWEEN_STEPS)
            killed_at = time.monotonic()
            before = len(load.sent)
            for name, index in victims:
                stack.kill(name, index)
            await asyncio.sleep(FAILOVER_SECONDS)
            await load.more(ANSWERS_BETWEEN_STEPS)
            during = [sent.answer for sent in load.sent[before:]]
            late = [sent.answer for sent in load.sent[before:] if sent.started > killed_at + FAILOVER_SECONDS]
            label = "+".join(f"{name}{index}" for name, index in victims)
            steps.append(f"{label}: failures={failures(during)}")
            # The survivors serve every request started once the kill is a second old.
            assert late and failures(late) == {}, (label, failures(late))
            assert set(failures(during)) <= {"503 service_unavailable", "cut_off"}, (label, failures(during))
            for name, index in victims:
                await stack.restart(name, index)
        await load.more(ANSWERS_BETWEEN_STEPS)
    finally:
        await load.stop()
        for balancer in balancers:
            await balancer.close()
    figures("; ".join(steps))
    await _audited(stack, load, accounts, price, figures)


async def test_rolling_upgrade_of_every_replica_under_load_fails_no_request(stack, figures):
    price = await stack.price_per_image()
    accounts = await _accounts(stack, price)
    balancers = [EdgeBalancer(stack.edges, api_key, CALLERS_PER_ACCOUNT) for _, api_key in accounts]
    load = SharedLoad(balancers).start()
    exit_codes = {}
    try:
        for name in ("catalog", "billing", "provider"):
            for index in range(len(stack.replicas[name])):
                await load.more(ANSWERS_BETWEEN_STEPS)
                exit_codes[f"{name}{index}"] = await stack.replace_in_place(name, index)
        for index in range(len(stack.edges)):
            await load.more(ANSWERS_BETWEEN_STEPS)
            exit_codes[f"edge{index}"] = await stack.replace_edge(index, balancers, ENDPOINT_REMOVAL_SECONDS)
        await load.more(ANSWERS_BETWEEN_STEPS)
    finally:
        await load.stop()
        for balancer in balancers:
            await balancer.close()
    figures(f"replaced={list(exit_codes)}")
    await _audited(stack, load, accounts, price, figures)
    assert set(exit_codes.values()) == {0}, exit_codes
    assert failures(load.answers()) == {} and load.refused == 0
