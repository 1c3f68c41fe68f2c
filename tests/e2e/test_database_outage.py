"""PostgreSQL stopped mid-load under billing and the catalog, then started again
(issue 15, items 4 and 5), through a real edge and `quantized serve` processes.

While it is down: billing's gRPC health is NOT_SERVING, the catalog's admin
service too (its request path serves from its snapshot), the edge turns not
ready once billing has been down for longer than its grace period (/readyz 503,
gRPC health NOT_SERVING), and every request is answered 200 or 503
`service_unavailable` with Retry-After, never 500. Once it is back everything
is SERVING and ready again without a restart, requests succeed, and the books
are exact: balance equals the ledger, each 200 charged once, nothing charged
for a 503.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator

import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from quantized.catalog.v1 import catalog_pb2
from quantized_runtime.channels import open_channel
from tests.e2e.money_stack import Answer, MoneyStack, audit, body, client_for, post, steer
from tests.fake_upstreams import FakeOpenAI
from tests.polling import eventually_true

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
CATALOG_ADMIN = catalog_pb2.DESCRIPTOR.services_by_name["CatalogAdminService"].full_name
# Holds stranded by the outage (reserved, then settle and release both failed)
# expire and are reaped within the test.
HOLD_TTL_SECONDS = 3.0
REAPER_INTERVAL_SECONDS = 0.2
CALLERS = 3
# A caller told to retry shortly waits a little, as a polite client would.
PAUSE_AFTER_503_SECONDS = 0.05
# The edge notices billing's outage after its grace period (3 s by default).
EDGE_NOTICE_SECONDS = 20.0


@pytest.fixture
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        steer(fake, 0.0)
        yield fake


async def _status(address: str, service: str) -> int:
    async with open_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=10)
        return reply.status


async def _until_status(address: str, service: str, status: int) -> None:
    async def has_it() -> bool:
        return await _status(address, service) == status
    await eventually_true(has_it)


class Callers:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.answers: list[Answer] = []
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._call()) for _ in range(CALLERS)]

    async def _call(self) -> None:
        while not self._stop.is_set():
            answer = await post(self.client, body("a hedgehog"))
            assert answer is not None and answer.status is not None, "the edge stopped answering"
            self.answers.append(answer)
            if answer.status != 200:
                await asyncio.sleep(PAUSE_AFTER_503_SECONDS)

    async def until(self, condition: Callable[[list[Answer]], bool]) -> None:
        async def met() -> bool:
            assert not any(task.done() for task in self._tasks), [t.result() for t in self._tasks if t.done()]
            return condition(self.answers)
        await eventually_true(met, 60)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


async def test_a_postgres_outage_mid_load_is_503_charged_nothing_and_heals(
        throwaway_postgres, tmp_path, upstream):
    billing_url = await throwaway_postgres.create_database("billing")
    catalog_url = await throwaway_postgres.create_database("catalog")
    root = tmp_path / "stack"
    root.mkdir()
    stack = MoneyStack(root, billing_url, upstream, edges=1, hold_ttl_seconds=HOLD_TTL_SECONDS,
                       reaper_interval_seconds=REAPER_INTERVAL_SECONDS, catalog_database_url=catalog_url)
    await stack.start()
    try:
        edge = stack.edges[0]
        billing, catalog = stack.addresses["billing"], stack.addresses["catalog"]
        price = await stack.price_per_image()
        opening = 10_000 * price
        account_id, api_key = await stack.create_account(opening)
        async with client_for(edge, api_key, CALLERS) as client, httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{edge.http_port}", timeout=10) as probes:
            callers = Callers(client)
            await callers.until(lambda answers: len(answers) >= 20)

            await throwaway_postgres.stop()
            stopped_at = len(callers.answers)

            await _until_status(billing, "", NOT_SERVING)
            await _until_status(catalog, CATALOG_ADMIN, NOT_SERVING)
            assert await _status(catalog, "") == SERVING

            async def edge_not_ready() -> bool:
                return (await probes.get("/readyz")).status_code == 503
            await eventually_true(edge_not_ready, EDGE_NOTICE_SECONDS)
            assert (await probes.get("/readyz")).json() == {"ready": False, "unavailable": ["billing"]}
            assert await _status(edge.address, "") == NOT_SERVING
            assert (await probes.get("/healthz")).status_code == 200

            await callers.until(lambda answers: sum(
                1 for answer in answers[stopped_at:] if answer.status == 503) >= 10)
            during = callers.answers[stopped_at:]
            refused = await client.post("/images/generations", json=body("a hedgehog"))
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "service_unavailable"
            assert refused.headers["retry-after"] == "1"

            await throwaway_postgres.start()
            started_at = len(callers.answers)

            async def all_back() -> bool:
                return (await _status(billing, "") == SERVING
                        and await _status(catalog, CATALOG_ADMIN) == SERVING
                        and (await probes.get("/readyz")).status_code == 200)
            await eventually_true(all_back, EDGE_NOTICE_SECONDS)
            await callers.until(lambda answers: sum(
                1 for answer in answers[started_at:] if answer.status == 200) >= 20)
            await callers.stop()

        answers = callers.answers
        statuses = Counter(answer.status for answer in answers)
        assert set(statuses) <= {200, 503}, statuses
        assert {answer.error_type for answer in answers if answer.status == 503} == {"service_unavailable"}
        assert any(answer.status == 503 for answer in during)
        books = await stack.settled_books(account_id, HOLD_TTL_SECONDS + 20)
        result = audit(answers, books, price, opening)
        print(f"\n[figures] statuses={dict(statuses)} {result.figure_line()}")
        assert result.problems == [] and result.drift == 0
        assert result.cut_off == 0
    finally:
        await stack.stop()
