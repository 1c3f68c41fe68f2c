"""A service that is down is a 503 (SERVICE_UNAVAILABLE over gRPC), never a 500:
the caller is told at once, with Retry-After and a request id, and nothing is
charged. Once the service is back on its address, requests succeed again."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from billing_svc.main import start as start_billing
from catalog_svc.main import start as start_catalog
from provider_svc.main import start as start_provider
from quantized.images.v1 import images_pb2, images_pb2_grpc
from tests.e2e.stack import CATALOG_CACHE_TTL_SECONDS, Stack

pytestmark = pytest.mark.slow

OPENING_CREDITS = 50_000_000
BODY = {"model": "sandbox-image-1", "prompt": "a hedgehog", "size": "64x64"}
# The stack's request deadline is 20 s: an answer well inside it did not wait for it.
WELL_BEFORE_THE_DEADLINE_SECONDS = 10


def _post(stack: Stack, api_key: str, body: dict = BODY) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    reply = httpx.post(f"{stack.base_url}/images/generations", json=body, timeout=60,
                       headers={"Authorization": f"Bearer {api_key}"})
    return reply, time.monotonic() - started


def _assert_service_unavailable(reply: httpx.Response, elapsed: float, service: str) -> None:
    assert reply.status_code == 503, reply.text
    error = reply.json()["error"]
    assert error["type"] == "service_unavailable" and error["code"] == "service_unavailable"
    assert f"the {service} service is unavailable" in error["message"]
    request_id = reply.headers["x-request-id"]
    assert request_id in error["message"]
    assert reply.headers["retry-after"] == "1"
    assert elapsed < WELL_BEFORE_THE_DEADLINE_SECONDS


@pytest.fixture
def account(stack: Stack):
    return stack.create_account(OPENING_CREDITS)


@contextlib.contextmanager
def _away(stack: Stack, name: str, start: Callable) -> Iterator[None]:
    """Stop one service; bring it back on the same address (and database) afterwards."""
    running = getattr(stack, name)
    settings = getattr(stack, f"{name}_settings")
    stack.run(running.stop(0))
    try:
        yield
    finally:
        successor = stack.run(start(Stack._on_port(settings, running)))
        stack.services[stack.services.index(running)] = successor
        setattr(stack, name, successor)


def _served_again(stack: Stack, api_key: str) -> httpx.Response:
    """Once a service is back, a request succeeds again as soon as the edge's
    channel has reconnected (its backoff is at most a second)."""
    give_up = time.monotonic() + 10
    while True:
        reply, _ = _post(stack, api_key)
        if reply.status_code != 503 or time.monotonic() > give_up:
            return reply
        time.sleep(0.1)


def _unchanged(stack: Stack, account_id: str, spendable: int) -> None:
    """Nothing charged: credits granted minus charged (what credits_remaining
    reports) are as they were. The edge's credit lease may still set money aside."""
    shown = stack.account(account_id).account
    assert shown.balance_micro_credits + shown.held_micro_credits == spendable


def test_provider_down_is_a_503_with_nothing_charged_and_it_serves_again_once_back(stack: Stack, account) -> None:
    first, _ = _post(stack, account.api_key)
    assert first.status_code == 200
    balance = first.json()["usage"]["credits_remaining"]

    with _away(stack, "provider", start_provider):
        for _attempt in range(3):
            reply, elapsed = _post(stack, account.api_key)
            _assert_service_unavailable(reply, elapsed, "provider")
        _unchanged(stack, account.account_id, balance)

    again = _served_again(stack, account.api_key)
    assert again.status_code == 200, again.text
    assert again.json()["usage"]["credits_remaining"] == balance - again.json()["usage"]["credits_used"]


def test_billing_down_is_a_503_and_charges_nothing(stack: Stack, account) -> None:
    first, _ = _post(stack, account.api_key)  # the key is now in the edge's auth cache
    assert first.status_code == 200
    balance = first.json()["usage"]["credits_remaining"]

    with _away(stack, "billing", start_billing):
        reply, elapsed = _post(stack, account.api_key)
        _assert_service_unavailable(reply, elapsed, "billing")

    _unchanged(stack, account.account_id, balance)
    again = _served_again(stack, account.api_key)
    assert again.status_code == 200, again.text


def test_catalog_down_with_a_cold_route_cache_is_a_503(stack: Stack, account) -> None:
    first, _ = _post(stack, account.api_key)
    assert first.status_code == 200
    balance = first.json()["usage"]["credits_remaining"]

    with _away(stack, "catalog", start_catalog):
        time.sleep(CATALOG_CACHE_TTL_SECONDS + 0.2)  # the cached route and quote lapse
        reply, elapsed = _post(stack, account.api_key)
        _assert_service_unavailable(reply, elapsed, "catalog")

    _unchanged(stack, account.account_id, balance)
    again = _served_again(stack, account.api_key)
    assert again.status_code == 200, again.text


def test_the_grpc_images_service_answers_unavailable_when_provider_is_down(stack: Stack, account) -> None:
    request = images_pb2.GenerateRequest(model="sandbox-image-1", prompt="a hedgehog", size="64x64")
    metadata = [("authorization", f"Bearer {account.api_key}")]
    with grpc.insecure_channel(stack.edge_grpc_addr) as channel:
        stub = images_pb2_grpc.ImagesServiceStub(channel)
        stub.Generate(request, timeout=30, metadata=metadata)
        with _away(stack, "provider", start_provider):
            with pytest.raises(grpc.RpcError) as caught:
                stub.Generate(request, timeout=30, metadata=metadata)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            status = rpc_status.from_call(caught.value)
            info = error_details_pb2.ErrorInfo()
            status.details[0].Unpack(info)
            assert info.reason == "SERVICE_UNAVAILABLE"
            assert "the provider service is unavailable" in status.message
        give_up = time.monotonic() + 10
        while True:
            try:
                stub.Generate(request, timeout=30, metadata=metadata)
                break
            except grpc.RpcError as error:
                # Until the edge's channel has reconnected to the restarted provider_svc.
                assert error.code() == grpc.StatusCode.UNAVAILABLE and time.monotonic() < give_up
                time.sleep(0.1)
