"""Idempotency-Key end to end (issue 19, item 1): every service real, the
OpenAI upstream faked on the wire and counting its calls, the keys in each
store the edge supports (billing's database on SQLite and PostgreSQL, and
Redis). A repeat gets the first answer byte for byte, through a restarted edge
and through another edge, and is charged nothing; a key reused with another
request, or whose answer was not stored, is a 409 in the OpenAI error shape; a
request that failed before any image frees its key."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import httpx
import openai
import pytest

from quantized.images.v1 import images_pb2, images_pb2_grpc
from quantized_runtime.grpc_errors import from_rpc_error
from tests.e2e.stack import Account, Stack
from tests.fake_upstreams import FakeBedrock, FakeGoogle, FakeOpenAI

pytestmark = pytest.mark.slow

OPENING_CREDITS = 500_000_000
BODY = {"model": "gpt-image-1", "prompt": "a hedgehog reading the ledger", "size": "1024x1024"}
CONCURRENT_REPEATS = 32
VISIBILITY_DEADLINE_SECONDS = 10.0


@pytest.fixture(params=["billing-sqlite", pytest.param("billing-postgres", marks=pytest.mark.postgres),
                        pytest.param("redis", marks=pytest.mark.redis)])
def store_settings(request) -> dict[str, dict[str, Any]]:
    """Where the keys live: billing's database (the stack's SQLite file, or
    PostgreSQL), or Redis, which every edge of the stack is given."""
    if request.param == "billing-postgres":
        return {"billing": {"database_url": request.getfixturevalue("postgres_url")}, "edge": {}}
    if request.param == "redis":
        return {"billing": {}, "edge": {"redis_url": request.getfixturevalue("redis_server").url}}
    return {"billing": {}, "edge": {}}


@pytest.fixture
def stack(store_settings, tmp_path, monkeypatch) -> Iterator[Stack]:
    # boto3 refuses to send unsigned requests: dummy credentials, no metadata lookups.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKEFAKEFAKEFAKE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret-access-key")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with FakeOpenAI() as fake_openai, FakeBedrock() as fake_bedrock, FakeGoogle() as fake_google:
        running = Stack(tmp_path, fake_openai, fake_bedrock, fake_google,
                        billing_overrides=store_settings["billing"],
                        edge_overrides=store_settings["edge"]).start()
        try:
            yield running
        finally:
            fake_openai.release()
            running.stop()


def _post(base_url: str, account: Account, key: str | None, body: Any = None, *,
          content: bytes | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {account.api_key}", "Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return httpx.post(f"{base_url}/images/generations", headers=headers, timeout=60,
                      content=content if content is not None else json.dumps(body or BODY).encode())


def _charges(stack: Stack, account: Account) -> tuple[int, int]:
    """(usage records, credits spent): what billing's books say this account was charged."""
    view = stack.account(account.account_id)
    spendable = view.account.balance_micro_credits + view.account.held_micro_credits
    return len(view.recent_usage), OPENING_CREDITS - spendable


def _charged_once(stack: Stack, account: Account, credits_used: int) -> bool:
    """True once billing shows exactly one charge of `credits_used` (a charge is
    written to billing's stream before the answer, and applied just after)."""
    give_up = time.monotonic() + VISIBILITY_DEADLINE_SECONDS
    while _charges(stack, account) != (1, credits_used) and time.monotonic() < give_up:
        time.sleep(0.1)
    return _charges(stack, account) == (1, credits_used)


def _error(reply: httpx.Response) -> dict[str, Any]:
    body = reply.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_a_repeat_is_the_first_answer_byte_for_byte_charged_once_across_restarts_and_edges(stack) -> None:
    account = stack.create_account(OPENING_CREDITS)
    first = _post(stack.base_url, account, "order-1")
    assert first.status_code == 200, first.text
    assert "idempotent-replayed" not in first.headers
    credits_used = first.json()["usage"]["credits_used"]
    assert credits_used > 0

    # The same request spelled otherwise: fields reordered, spaced, the default n written out.
    respelled = b'{ "size" : "1024x1024", "n": 1, "prompt": "a hedgehog reading the ledger", "model": "gpt-image-1" }'
    repeat = _post(stack.base_url, account, "order-1", content=respelled)
    assert repeat.status_code == 200
    assert repeat.headers["idempotent-replayed"] == "true"
    assert repeat.content == first.content
    assert repeat.headers["x-request-id"] != first.headers["x-request-id"]

    stack.restart_edge()
    after_restart = _post(stack.base_url, account, "order-1")
    second_edge = stack.add_edge()
    through_second = _post(f"http://127.0.0.1:{second_edge.http_port}/v1", account, "order-1")
    for replay in (after_restart, through_second):
        assert replay.status_code == 200
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.content == first.content

    assert len(stack.openai.requests) == 1
    assert _charged_once(stack, account, credits_used)


def test_concurrent_repeats_through_two_edges_make_one_upstream_call_and_one_charge(stack) -> None:
    account = stack.create_account(OPENING_CREDITS)
    second_edge = stack.add_edge()
    base_urls = (stack.base_url, f"http://127.0.0.1:{second_edge.http_port}/v1")
    stack.openai.hold()
    with ThreadPoolExecutor(CONCURRENT_REPEATS) as pool:
        replies = [pool.submit(_post, base_urls[index % 2], account, "burst-1")
                   for index in range(CONCURRENT_REPEATS)]
        give_up = time.monotonic() + VISIBILITY_DEADLINE_SECONDS
        while not stack.openai.requests and time.monotonic() < give_up:
            time.sleep(0.02)
        # The others reach the edge and wait on the key meanwhile (or come after the
        # answer and replay it: either way the upstream sees one call).
        time.sleep(0.5)
        stack.openai.release()
        answers = [reply.result() for reply in replies]

    assert [answer.status_code for answer in answers] == [200] * CONCURRENT_REPEATS
    assert len({answer.content for answer in answers}) == 1
    assert sum("idempotent-replayed" not in answer.headers for answer in answers) == 1
    assert len(stack.openai.requests) == 1
    assert _charged_once(stack, account, answers[0].json()["usage"]["credits_used"])


def test_a_key_reused_with_another_request_is_a_409_and_charges_nothing(stack) -> None:
    account = stack.create_account(OPENING_CREDITS)
    first = _post(stack.base_url, account, "order-2")
    assert first.status_code == 200
    changed = _post(stack.base_url, account, "order-2", {**BODY, "prompt": "a different hedgehog"})
    assert changed.status_code == 409
    error = _error(changed)
    assert (error["type"], error["code"], error["param"]) == (
        "idempotency_error", "idempotency_conflict", "idempotency_key")
    assert "different request" in error["message"]
    assert len(stack.openai.requests) == 1
    assert _charged_once(stack, account, first.json()["usage"]["credits_used"])


@pytest.mark.parametrize("store_settings", ["billing-sqlite"], indirect=True)
def test_keys_are_per_account_and_a_request_without_a_key_always_runs(stack) -> None:
    first_account, other_account = stack.create_account(OPENING_CREDITS), stack.create_account(OPENING_CREDITS)
    assert _post(stack.base_url, first_account, "shared-key").status_code == 200
    other = _post(stack.base_url, other_account, "shared-key", {**BODY, "prompt": "someone else's"})
    assert other.status_code == 200 and "idempotent-replayed" not in other.headers
    assert _post(stack.base_url, first_account, None).status_code == 200
    assert _post(stack.base_url, first_account, None).status_code == 200
    assert len(stack.openai.requests) == 4


@pytest.mark.parametrize("store_settings", ["billing-sqlite"], indirect=True)
def test_a_request_that_failed_before_any_image_frees_its_key(stack) -> None:
    account = stack.create_account(OPENING_CREDITS)
    stack.openai.then(stack.openai.error("server_error"))
    failed = _post(stack.base_url, account, "order-3")
    assert failed.status_code == 503
    retried = _post(stack.base_url, account, "order-3")
    assert retried.status_code == 200 and "idempotent-replayed" not in retried.headers
    assert len(stack.openai.requests) == 2
    assert _charged_once(stack, account, retried.json()["usage"]["credits_used"])


@pytest.mark.parametrize("store_settings", ["billing-sqlite"], indirect=True)
def test_an_answer_over_the_size_bound_is_not_stored_and_its_replay_is_a_409(stack) -> None:
    small_store_edge = stack.add_edge(idempotency_max_stored_bytes=1024)
    base_url = f"http://127.0.0.1:{small_store_edge.http_port}/v1"
    account = stack.create_account(OPENING_CREDITS)
    first = _post(base_url, account, "big-1")
    assert first.status_code == 200
    replay = _post(base_url, account, "big-1")
    assert replay.status_code == 409
    error = _error(replay)
    assert error["code"] == "idempotency_conflict"
    assert "too large to store" in error["message"]
    assert len(stack.openai.requests) == 1
    assert _charged_once(stack, account, first.json()["usage"]["credits_used"])


@pytest.mark.parametrize("store_settings", ["billing-sqlite", pytest.param("redis", marks=pytest.mark.redis)],
                         indirect=True)
def test_grpc_replays_the_first_response_with_the_replay_in_trailing_metadata(stack) -> None:
    account = stack.create_account(OPENING_CREDITS)
    second_edge = stack.add_edge()
    request = images_pb2.GenerateRequest(model="gpt-image-1", prompt="a hedgehog over gRPC", size="1024x1024",
                                         idempotency_key="grpc-order-1")
    metadata = (("authorization", f"Bearer {account.api_key}"),)
    answers = []
    for address in (stack.edge_grpc_addr, f"127.0.0.1:{second_edge.grpc_port}"):
        with grpc.insecure_channel(address) as channel:
            response, call = images_pb2_grpc.ImagesServiceStub(channel).Generate.with_call(
                request, metadata=metadata, timeout=60)
            answers.append((response, dict(call.trailing_metadata() or ())))
    (first, first_trailer), (replay, replay_trailer) = answers
    assert "idempotent-replayed" not in first_trailer
    assert replay_trailer["idempotent-replayed"] == "true"
    assert replay.SerializeToString() == first.SerializeToString()

    with grpc.insecure_channel(stack.edge_grpc_addr) as channel, pytest.raises(grpc.RpcError) as refused:
        images_pb2_grpc.ImagesServiceStub(channel).Generate(
            images_pb2.GenerateRequest(model="gpt-image-1", prompt="another", idempotency_key="grpc-order-1"),
            metadata=metadata, timeout=60)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert from_rpc_error(refused.value).reason == "IDEMPOTENCY_CONFLICT"
    assert len(stack.openai.requests) == 1
    assert _charged_once(stack, account, first.usage.credits_used)


@pytest.mark.parametrize("store_settings", ["billing-sqlite"], indirect=True)
def test_the_openai_sdk_sends_the_key_and_gets_the_same_images(stack) -> None:
    account = stack.create_account(OPENING_CREDITS)
    client = openai.OpenAI(api_key=account.api_key, base_url=stack.base_url, max_retries=0)
    results = [client.images.generate(model="gpt-image-1", prompt="a hedgehog from the SDK",
                                      extra_headers={"Idempotency-Key": "sdk-order-1"})
               for _ in range(2)]
    assert results[0].data[0].b64_json == results[1].data[0].b64_json
    assert results[0].created == results[1].created
    assert len(stack.openai.requests) == 1
