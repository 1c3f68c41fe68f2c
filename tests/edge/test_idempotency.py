"""Idempotency-Key at the edge, with the keys in a real Redis and fake peers
that can refuse a charge (exact holds, so the edge waits for its Settle): a request that failed after its images were
generated keeps its key (a retry is refused rather than run and paid again),
and while the key store is down a request with a key is refused before any
work, while requests without one go on; a replay's log line says it is one."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from quantized_runtime.errors import Reason, ServiceError

from tests.edge.conftest import Stack
from tests.edge.fakes import VALID_KEY

pytestmark = pytest.mark.redis

BODY = {"model": "dall-e-3", "prompt": "a hedgehog"}


@pytest.fixture
def edge_overrides(redis_server) -> dict[str, object]:
    return {"redis_url": redis_server.url, "credit_leases": False}


async def _generate(stack: Stack, key: str | None) -> Any:
    headers = {"Authorization": f"Bearer {VALID_KEY}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return await stack.http.post("/v1/images/generations", headers=headers, json=BODY)


async def test_a_request_that_failed_after_its_images_were_generated_keeps_its_key(stack: Stack) -> None:
    stack.peers.billing.settle_error = ServiceError(Reason.INTERNAL, "the ledger is on fire")
    failed = await _generate(stack, "after-images")
    assert failed.status_code == 500
    stack.peers.billing.settle_error = None

    retry = await _generate(stack, "after-images")
    assert retry.status_code == 409
    error = retry.json()["error"]
    assert error["code"] == "idempotency_conflict"
    assert "failed after its images were generated" in error["message"]
    assert len(stack.peers.provider.calls) == 1
    assert stack.peers.billing.count("Settle") == 1


async def test_while_the_key_store_is_down_keyed_requests_are_refused_and_others_served(
        stack: Stack, redis_server) -> None:
    redis_server.stop()
    refused = await _generate(stack, "store-down")
    assert refused.status_code == 503
    error = refused.json()["error"]
    assert error["code"] == "service_unavailable"
    assert "nothing was charged" in error["message"]
    assert stack.peers.provider.calls == []
    served = await _generate(stack, None)
    assert served.status_code == 200
    assert len(stack.peers.provider.calls) == 1


async def test_a_replay_is_logged_as_one_with_nothing_generated_or_charged(
        stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    first = await _generate(stack, "logged")
    replay = await _generate(stack, "logged")
    assert (first.status_code, replay.status_code) == (200, 200)
    assert replay.headers["idempotent-replayed"] == "true"
    lines = [record.fields for record in caplog.records  # type: ignore[attr-defined]
             if record.name == "quantized.edge.request"]
    assert [(line["replayed"], line["images"] > 0, line["credits"] > 0) for line in lines] == [
        (False, True, True), (True, False, False)]
    assert len(stack.peers.provider.calls) == 1
