"""Spending caps per API key (issue 19 item 3), end to end over HTTP through two
real edges and billing on SQLite and on PostgreSQL:

- a request that would take its key over the key's cap is a 402 naming the
  cap, before any upstream call, and writes nothing; the account's other keys
  go on spending;
- the daily cap counts the current UTC day only;
- two keys of one account with different caps under concurrent load: neither
  is charged a single credit over its cap, and each gets every request its cap
  has room for;
- the usage report by key shows each key's spend against its caps.

Each test prints its figures (requests, successes, credits charged per key).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import create_async_engine

from billing_svc.storage.schema import api_keys
from quantized_runtime.clock import utc_now
from tests.e2e.money_stack import MoneyStack, body, client_for, post, steer, upstream_calls
from tests.fake_upstreams import FakeOpenAI
from tests.polling import eventually_true

pytestmark = pytest.mark.slow

FUNDS_IN_IMAGES = 1_000
CALLERS_PER_KEY = 32


@pytest.fixture
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        steer(fake, slow_seconds=0)
        yield fake


@pytest.fixture
async def stack(tmp_path, database_url: str, upstream: FakeOpenAI) -> AsyncIterator[MoneyStack]:
    running = MoneyStack(tmp_path, database_url, upstream)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
def figures(capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest) -> Callable[[str], None]:
    def show(line: str) -> None:
        with capsys.disabled():
            print(f"\n[figures] {request.node.name}: {line}")
    return show


async def _date_spend_yesterday(database_url: str, key_id: str) -> None:
    """Billing's clock cannot be moved in a running process: the key's spend is
    dated the day before instead, as it would be once midnight (UTC) passed."""
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(update(api_keys).where(api_keys.c.id == key_id)
                               .values(spend_day=(utc_now() - timedelta(days=1)).date()))
    finally:
        await engine.dispose()


async def test_a_request_over_its_keys_cap_is_402_naming_the_cap_before_any_upstream_call(
        stack: MoneyStack, upstream: FakeOpenAI) -> None:
    price = await stack.price_per_image()
    account_id, uncapped_key = await stack.create_account(FUNDS_IN_IMAGES * price)
    # Room for one image and a half: the first request fits, the second cannot.
    key_id, capped_key = await stack.create_key(account_id, total_cap=price + price // 2)
    first, second = stack.edges
    async with client_for(first, capped_key, 1) as on_first, client_for(second, capped_key, 1) as on_second:
        assert (await post(on_first, body("capped-1"))).status == 200
        before = await stack.books(account_id)
        reply = await on_second.post("/images/generations", json=body("capped-2"))
    assert reply.status_code == 402
    error = reply.json()["error"]
    assert error["type"] == error["code"] == "insufficient_credits"
    assert error["message"] == (
        f"insufficient credits: the request may cost up to {price} micro-credits and API key "
        f"'{key_id}' has {price // 2} left under its total spending cap of {price + price // 2} "
        "micro-credits (in total)")
    assert upstream_calls(upstream, "capped-2") == 0
    assert await stack.books(account_id) == before

    # The cap is the key's, not the account's: its other key spends on (on the
    # account's lease), and its Charge, answered after the response, counts too.
    async with client_for(first, uncapped_key, 1) as other:
        assert (await post(other, body("uncapped"))).status == 200
    spend = await stack.key_spend(account_id)
    assert spend[key_id].total_micro_credits == price
    assert spend[key_id].held_micro_credits == 0
    [uncapped_key_id] = [other_id for other_id in spend if other_id != key_id]

    async def uncapped_spend_counted() -> bool:
        return (await stack.key_spend(account_id))[uncapped_key_id].total_micro_credits == price
    await eventually_true(uncapped_spend_counted)


async def test_the_daily_cap_starts_again_on_the_next_utc_day(stack: MoneyStack, database_url: str) -> None:
    price = await stack.price_per_image()
    account_id, _ = await stack.create_account(FUNDS_IN_IMAGES * price)
    key_id, capped_key = await stack.create_key(account_id, daily_cap=price, total_cap=2 * price)
    async with client_for(stack.edges[0], capped_key, 1) as client:
        assert (await post(client, body("day-1"))).status == 200
        assert (await post(client, body("day-1-again"))).status == 402
        await _date_spend_yesterday(database_url, key_id)
        assert (await post(client, body("day-2"))).status == 200
        # The total cap counts both days.
        await _date_spend_yesterday(database_url, key_id)
        assert (await post(client, body("day-3"))).status == 402
    spend = (await stack.key_spend(account_id))[key_id]
    assert (spend.total_micro_credits, spend.today_micro_credits) == (2 * price, 0)


async def test_two_keys_with_different_caps_under_concurrent_load_never_pass_their_caps(
        stack: MoneyStack, upstream: FakeOpenAI, figures: Callable[[str], None]) -> None:
    price = await stack.price_per_image()
    account_id, _ = await stack.create_account(FUNDS_IN_IMAGES * price)
    # A daily cap for one, a total cap for the other, neither a whole number of images.
    room = {"daily": 5, "total": 11}
    keys = {"daily": await stack.create_key(account_id, daily_cap=room["daily"] * price + price // 3),
            "total": await stack.create_key(account_id, total_cap=room["total"] * price + price // 2)}

    async def key_load(name: str) -> Counter[int | None]:
        _, api_key = keys[name]
        clients = [client_for(edge, api_key, CALLERS_PER_KEY) for edge in stack.edges]
        try:
            answers = await asyncio.gather(*(
                post(clients[index % len(clients)], body(f"{name}-{index}"))
                for index in range(CALLERS_PER_KEY)))
        finally:
            for client in clients:
                await client.aclose()
        assert all(answer is not None for answer in answers)
        return Counter(answer.status for answer in answers if answer is not None)

    statuses = dict(zip(room, await asyncio.gather(*(key_load(name) for name in room)), strict=True))
    spend = await stack.key_spend(account_id)
    books = await stack.books(account_id)
    lines = []
    for name, (key_id, _) in keys.items():
        assert statuses[name] == {200: room[name], 402: CALLERS_PER_KEY - room[name]}
        assert spend[key_id].total_micro_credits == room[name] * price
        assert spend[key_id].held_micro_credits == 0
        assert upstream_calls(upstream, f"{name}-") == room[name]
        lines.append(f"{name}: requests={CALLERS_PER_KEY} succeeded={statuses[name][200]} "
                     f"refused_402={statuses[name][402]} credits_charged={spend[key_id].total_micro_credits} "
                     f"cap_room_images={room[name]}")
    assert books.balance == books.ledger_sum == (FUNDS_IN_IMAGES - sum(room.values())) * price
    assert books.held == books.open_holds == 0
    figures(" | ".join(lines))


async def test_the_usage_report_by_key_shows_each_keys_spend_against_its_caps(stack: MoneyStack) -> None:
    price = await stack.price_per_image()
    account_id, _ = await stack.create_account(FUNDS_IN_IMAGES * price)
    capped_id, capped_key = await stack.create_key(account_id, daily_cap=3 * price, total_cap=10 * price)
    free_id, free_key = await stack.create_key(account_id)
    for api_key, requests in ((capped_key, 2), (free_key, 1)):
        async with client_for(stack.edges[0], api_key, 1) as client:
            for index in range(requests):
                answer = await post(client, body(f"usage-{index}"))
                assert answer is not None and answer.status == 200
    async with client_for(stack.edges[1], free_key, 1) as client:
        reply = await client.get("/usage", params={"group_by": "key"})
    assert reply.status_code == 200, reply.text
    by_key = {bucket["key_id"]: bucket for bucket in reply.json()["data"]}
    assert {key: (bucket["credits_used"], bucket["daily_cap_credits"], bucket["total_cap_credits"],
                  bucket["credits_spent_today"], bucket["credits_spent_total"])
            for key, bucket in by_key.items()} == {
        capped_id: (2 * price, 3 * price, 10 * price, 2 * price, 2 * price),
        free_id: (price, None, None, price, price)}


async def test_a_cap_put_on_a_key_in_use_reaches_the_edge_with_its_next_charge_answer(
        tmp_path, database_url: str, upstream: FakeOpenAI) -> None:
    """The edge caches the key's authentication (uncapped) for 30 s here, longer
    than the test: only billing's Charge answer can tell it of the new cap."""
    stack = MoneyStack(tmp_path, database_url, upstream, edges=1,
                       edge_env={"QUANTIZED_EDGE_AUTH_CACHE_TTL_SECONDS": "30"})
    await stack.start()
    try:
        price = await stack.price_per_image()
        account_id, api_key = await stack.create_account(FUNDS_IN_IMAGES * price)
        async with client_for(stack.edges[0], api_key, 1) as client:
            assert (await post(client, body("before-cap"))).status == 200
            [key_id] = await stack.key_spend(account_id)
            await stack.set_caps(key_id, total_cap=price + price // 2)
            # Admitted on the account's lease: the edge has not heard of the cap.
            assert (await post(client, body("stale"))).status == 200

            async def charged_twice() -> bool:
                return (await stack.key_spend(account_id))[key_id].total_micro_credits == 2 * price
            await eventually_true(charged_twice)
            refused = await client.post("/images/generations", json=body("after-answer"))
        assert refused.status_code == 402
        assert "total spending cap" in refused.json()["error"]["message"]
        assert upstream_calls(upstream, "after-answer") == 0
    finally:
        await stack.stop()
