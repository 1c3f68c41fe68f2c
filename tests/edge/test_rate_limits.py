"""Per-key and per-account rate limits and the failed-authentication guard, through
real edges in front of the fake peers; shared limits through a real redis-server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest

from quantized.billing.v1 import billing_pb2
from quantized.images.v1 import images_pb2
from quantized_runtime.grpc_errors import from_rpc_error

from edge.main import RunningEdge, start
from tests.conftest import RedisServer
from tests.edge.conftest import CALL_TIMEOUT_SECONDS, Stack, edge_settings
from tests.edge.fakes import Account, Peers, VALID_KEY, start_fake_peers
from tests.harness import serving

BODY = {"model": "dall-e-3", "prompt": "a hedgehog"}
LIMITED_KEY = "sk-quantized-limited"
SECOND_KEY = "sk-quantized-limited-second"


def limits(rpm: int = 0, concurrency: int = 0) -> billing_pb2.RateLimits:
    return billing_pb2.RateLimits(requests_per_minute=rpm, max_concurrent_requests=concurrency)


def limited(peers: Peers, token: str = LIMITED_KEY, *, key: billing_pb2.RateLimits | None = None,
            account: billing_pb2.RateLimits | None = None) -> None:
    """Billing answers `token` with these limits, for account acct_limited."""
    peers.billing.accounts[token] = Account("acct_limited", 100_000_000, key_id=f"key_{token[-6:]}",
                                            key_limits=key or limits(), account_limits=account or limits())


async def post(client: httpx.AsyncClient, token: str = LIMITED_KEY) -> httpx.Response:
    return await client.post("/v1/images/generations", headers={"Authorization": f"Bearer {token}"}, json=BODY)


def charged_for(peers: Peers, account_id: str) -> int:
    """Requests billing was asked to pay for: charged against a lease, or held exactly."""
    return sum(1 for kind in ("Charge", "Reserve") for request in peers.billing.requests(kind)
               if request.account_id == account_id)


async def test_one_request_over_the_minute_gets_one_429_without_charge_or_upstream(stack: Stack) -> None:
    limited(stack.peers, key=limits(rpm=3))
    answers = [await post(stack.http) for _ in range(4)]
    assert [answer.status_code for answer in answers] == [200, 200, 200, 429]
    refused = answers[3]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    error = refused.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limited")
    assert "key is over its requests per minute" in error["message"]
    assert refused.headers["x-request-id"] in error["message"]
    assert charged_for(stack.peers, "acct_limited") == 3
    assert len(stack.peers.provider.calls) == 3


async def test_grpc_callers_get_resource_exhausted_with_the_wait(stack: Stack) -> None:
    limited(stack.peers, key=limits(rpm=1))
    metadata = (("authorization", f"Bearer {LIMITED_KEY}"),)
    request = images_pb2.GenerateRequest(model=BODY["model"], prompt=BODY["prompt"])
    await stack.images.Generate(request, metadata=metadata, timeout=CALL_TIMEOUT_SECONDS)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.images.Generate(request, metadata=metadata, timeout=CALL_TIMEOUT_SECONDS)
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    error = from_rpc_error(caught.value)
    assert error.reason == "RATE_LIMITED"
    assert 1 <= int(error.metadata["retry_after_seconds"]) <= 60
    assert len(stack.peers.provider.calls) == 1


async def test_the_account_limit_spans_its_keys(stack: Stack) -> None:
    limited(stack.peers, LIMITED_KEY, account=limits(rpm=2))
    limited(stack.peers, SECOND_KEY, account=limits(rpm=2))
    statuses = [(await post(stack.http, token)).status_code for token in (LIMITED_KEY, SECOND_KEY, SECOND_KEY)]
    assert statuses == [200, 200, 429]
    assert "account is over its requests per minute" in (await post(stack.http)).json()["error"]["message"]


async def test_requests_in_flight_are_capped(stack: Stack) -> None:
    limited(stack.peers, key=limits(concurrency=2))
    release = asyncio.Event()

    async def slow(request: Any) -> None:
        await release.wait()

    stack.peers.provider.behaviour["openai"] = slow
    in_flight = [asyncio.create_task(post(stack.http)) for _ in range(2)]
    while len(stack.peers.provider.calls) < 2:
        await asyncio.sleep(0.01)
    refused = await post(stack.http)
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert "concurrent requests" in refused.json()["error"]["message"]
    release.set()
    del stack.peers.provider.behaviour["openai"]
    assert [answer.status_code for answer in await asyncio.gather(*in_flight)] == [200, 200]
    # The slots are free again.
    assert (await post(stack.http)).status_code == 200
    assert charged_for(stack.peers, "acct_limited") == 3


async def test_callers_without_limits_are_not_counted(stack: Stack) -> None:
    for _ in range(5):
        assert (await post(stack.http, VALID_KEY)).status_code == 200


@pytest.mark.parametrize("edge_overrides", [{"auth_failures_per_minute_per_address": 5}])
async def test_a_flood_of_bad_tokens_reaches_billing_a_bounded_number_of_times(stack: Stack) -> None:
    assert (await post(stack.http, VALID_KEY)).status_code == 200
    statuses = [(await post(stack.http, f"sk-quantized-bad-{index}")).status_code for index in range(40)]
    statuses += [(await post(stack.http, "sk-quantized-bad-0")).status_code for _ in range(10)]
    assert stack.peers.billing.count("Authenticate") == 1 + 5
    assert statuses[:5] == [401] * 5
    assert set(statuses[5:40]) == {429}
    # A token refused a moment ago is refused again from memory.
    assert set(statuses[40:]) == {401}
    # The good key the edge already authenticated still works from that address.
    assert (await post(stack.http, VALID_KEY)).status_code == 200


@pytest.mark.parametrize("edge_overrides", [{"auth_failure_cache_ttl_seconds": 0.2}])
async def test_a_refused_token_is_asked_about_again_after_the_failure_cache(stack: Stack) -> None:
    stack.peers.billing.accounts.pop(VALID_KEY)
    assert (await post(stack.http, VALID_KEY)).status_code == 401
    assert (await post(stack.http, VALID_KEY)).status_code == 401
    assert stack.peers.billing.count("Authenticate") == 1
    stack.peers.billing.accounts[VALID_KEY] = Account("acct_valid", 100_000_000)
    await asyncio.sleep(0.3)
    assert (await post(stack.http, VALID_KEY)).status_code == 200
    assert stack.peers.billing.count("Authenticate") == 2


# Shared limits through Redis.

@contextlib.asynccontextmanager
async def edges(peers: Peers, count: int, **overrides: Any) -> AsyncIterator[list[tuple[RunningEdge, httpx.AsyncClient]]]:
    async with contextlib.AsyncExitStack() as stack:
        running = []
        for _ in range(count):
            served = await stack.enter_async_context(serving(
                start(edge_settings(peers.address, **overrides)), port=lambda edge: edge.grpc_port,
                stop_grace_seconds=0.5))
            client = await stack.enter_async_context(httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{served.running.http_port}", timeout=30))
            running.append((served.running, client))
        yield running


@pytest.fixture
async def peers() -> AsyncIterator[Peers]:
    running = await start_fake_peers()
    try:
        yield running
    finally:
        await running.server.stop(0)


@pytest.mark.redis
async def test_two_edges_sharing_redis_share_the_limit(peers: Peers, redis_server: RedisServer) -> None:
    limited(peers, key=limits(rpm=3, concurrency=10))
    async with edges(peers, 2, redis_url=redis_server.url) as (first, second):
        statuses = [(await post(client)).status_code for client in (first[1], second[1], first[1], second[1])]
    assert statuses == [200, 200, 200, 429]
    assert len(peers.provider.calls) == 3


@pytest.mark.redis
async def test_redis_stopped_falls_back_to_each_edges_own_limit(peers: Peers, redis_server: RedisServer) -> None:
    limited(peers, key=limits(rpm=2))
    async with edges(peers, 1, redis_url=redis_server.url) as [(edge, client)]:
        assert [(await post(client)).status_code for _ in range(3)] == [200, 200, 429]
        redis_server.stop()
        # The edge's own counter starts afresh: the limit still holds, per edge.
        assert [(await post(client)).status_code for _ in range(3)] == [200, 200, 429]
        assert edge.limiter.redis_failures >= 1


@pytest.mark.redis
async def test_redis_stopped_refuses_under_the_refuse_policy(peers: Peers, redis_server: RedisServer) -> None:
    limited(peers, key=limits(rpm=5))
    async with edges(peers, 1, redis_url=redis_server.url, redis_unavailable_policy="refuse") as [(_, client)]:
        assert (await post(client)).status_code == 200
        redis_server.stop()
        refused = await post(client)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "service_unavailable"
        assert "rate limit service is unavailable" in refused.json()["error"]["message"]
        # Callers without limits need no counter, so Redis being down does not stop them.
        assert (await post(client, VALID_KEY)).status_code == 200
    assert len(peers.provider.calls) == 2
