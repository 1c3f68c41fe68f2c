"""Properties of the generation flow: billing, fallback, pinning, caching, the response."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest

from quantized.billing.v1 import billing_pb2
from quantized.common.v1 import images_pb2 as common_pb2
from quantized.images.v1 import images_pb2
from quantized.provider.v1 import provider_pb2
from quantized_runtime.client import call
from quantized_runtime.errors import Reason, ServiceError

from tests.edge.conftest import CALL_TIMEOUT_SECONDS, Stack
from tests.edge.fakes import (
    DALL_E_3_PRICE, PNG_BYTES, Account, POOR_KEY, UNLIMITED_KEY, VALID_KEY, flagged_image, image,
)
from tests.polling import eventually

AUTH = {"Authorization": f"Bearer {VALID_KEY}"}
GRPC_AUTH = (("authorization", f"Bearer {VALID_KEY}"),)
NOVA = "amazon.nova-canvas-v1:0"


async def recorded_charges(stack: Stack, count: int = 1) -> list[billing_pb2.ChargeRequest]:
    """The Charges billing has read: a response waits only until its Charge is
    written to billing's stream, not until billing read it."""
    await eventually(lambda: len(stack.peers.billing.requests("Charge")) >= count)
    return stack.peers.billing.requests("Charge")


async def generate(stack: Stack, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    return await stack.http.post("/v1/images/generations", headers={**AUTH, **(headers or {})}, json=body)


async def test_response_has_exactly_the_spec_fields(stack: Stack) -> None:
    response = await generate(stack, {"model": "dall-e-3", "prompt": "a hedgehog", "quality": "standard"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"created", "model", "data", "usage"}
    assert body["created"] == 1777975004 and body["model"] == "dall-e-3"
    assert body["data"] == [{"b64_json": base64.b64encode(PNG_BYTES).decode(), "revised_prompt": "revised: a hedgehog",
                             "seed": None, "watermark": "none", "flagged": False}]
    assert body["usage"] == {"images": 1, "input_tokens": None, "output_tokens": None, "total_tokens": None,
                             "megapixels": None, "credits_used": DALL_E_3_PRICE,
                             "credits_remaining": 100_000_000 - DALL_E_3_PRICE}


async def test_the_provider_gets_the_route_and_the_request_context(stack: Stack) -> None:
    response = await generate(stack, {"model": NOVA, "prompt": "a hedgehog", "seed": 7})
    assert response.status_code == 200
    call = stack.peers.provider.calls[0]
    assert (call.provider, call.model_id, call.upstream_model_id, call.region) == (
        "bedrock", NOVA, f"up-{NOVA}", "us-east-1")
    assert call.watermark == common_pb2.WATERMARK_PROVENANCE
    assert call.params.seed == 7
    request_id = response.headers["x-request-id"]
    assert call.request_id == request_id
    assert (await recorded_charges(stack))[0].request_id == request_id
    assert response.json()["data"][0]["watermark"] == "provenance"


async def test_the_request_deadline_reaches_the_provider(stack: Stack) -> None:
    await generate(stack, {"model": "dall-e-3", "prompt": "x"})
    remaining = stack.peers.provider.time_remaining[0]
    assert remaining is not None and 0 < remaining <= 20.0


async def test_insufficient_credits_never_calls_the_provider(stack: Stack) -> None:
    response = await stack.http.post("/v1/images/generations", headers={"Authorization": f"Bearer {POOR_KEY}"},
                                     json={"model": "dall-e-3", "prompt": "x"})
    assert response.status_code == 402
    assert stack.peers.provider.calls == []
    assert stack.peers.billing.count("Charge") == 0 and stack.peers.billing.count("Settle") == 0
    assert stack.peers.billing.count("Reserve") == 1  # the lease was refused: an exact hold, refused too


def nothing_charged(stack: Stack) -> None:
    billing = stack.peers.billing
    assert billing.count("Charge") == 0 and billing.count("Settle") == 0
    assert billing.accounts[VALID_KEY].spendable == 100_000_000


async def test_a_failure_after_admission_charges_nothing_and_gives_the_lease_back_its_quote(stack: Stack) -> None:
    stack.peers.provider.behaviour["openai"] = ServiceError(Reason.UPSTREAM_UNAVAILABLE, "timed out")
    response = await generate(stack, {"model": "dall-e-3", "prompt": "x"})
    assert response.status_code == 503
    nothing_charged(stack)
    (lease,) = stack.peers.billing.open_leases()
    stack.peers.provider.behaviour.clear()
    # The lease was sized for LEASE_MIN_QUOTES quotes; all of them are still there.
    for _ in range(lease.amount // DALL_E_3_PRICE):
        assert (await generate(stack, {"model": "dall-e-3", "prompt": "x"})).status_code == 200
    assert stack.peers.billing.count("AcquireLease") == 1


async def test_a_crash_after_admission_charges_nothing(stack: Stack) -> None:
    async def crash(request: Any) -> Any:
        raise RuntimeError("boom")

    stack.peers.provider.behaviour["openai"] = crash
    response = await generate(stack, {"model": "dall-e-3", "prompt": "x"})
    assert response.status_code == 500
    nothing_charged(stack)


async def test_a_flagged_generation_is_free(stack: Stack) -> None:
    stack.peers.provider.behaviour["openai"] = provider_pb2.GenerateResponse(images=[flagged_image()])
    response = await generate(stack, {"model": "dall-e-3", "prompt": "x"})
    assert response.status_code == 200
    body = response.json()
    assert body["data"] == [{"b64_json": None, "revised_prompt": None, "seed": None, "watermark": "none",
                             "flagged": True}]
    assert body["usage"]["images"] == 0 and body["usage"]["credits_used"] == 0
    assert body["created"] == 0
    charge = (await recorded_charges(stack))[0]
    assert charge.amount_micro_credits == 0 and charge.usage.images == 0
    assert body["usage"]["credits_remaining"] == 100_000_000


async def test_a_partly_flagged_generation_pays_for_the_generated_images_only(stack: Stack) -> None:
    stack.peers.provider.behaviour["openai"] = provider_pb2.GenerateResponse(
        images=[image(), flagged_image(), image(seed=5)])
    response = await generate(stack, {"model": "dall-e-3", "prompt": "x", "n": 3})
    body = response.json()
    assert [entry["flagged"] for entry in body["data"]] == [False, True, False]
    assert body["data"][2]["seed"] == 5
    assert body["usage"]["images"] == 2
    charge = (await recorded_charges(stack))[0]
    assert charge.amount_micro_credits == 2 * DALL_E_3_PRICE
    assert charge.usage.images == 2
    assert stack.peers.billing.requests("AcquireLease")[0].unit_micro_credits == 3 * DALL_E_3_PRICE
    assert body["usage"]["credits_used"] == 2 * DALL_E_3_PRICE


async def test_token_priced_models_are_priced_from_usage(stack: Stack) -> None:
    usage = common_pb2.UpstreamUsage(input_tokens=50, output_tokens=4160, total_tokens=4210)
    stack.peers.provider.behaviour["openai"] = provider_pb2.GenerateResponse(
        created=5, images=[image(watermark=common_pb2.WATERMARK_C2PA)], usage=usage)
    response = await generate(stack, {"model": "gpt-image-1", "prompt": "x", "quality": "low", "user": "u1"})
    body = response.json()
    # The quote's card: 80 micro-credits per input token, 640 per output token.
    price = 50 * 80 + 4160 * 640
    assert stack.peers.catalog.requests("QuotePrice")[0].quality == common_pb2.QUALITY_LOW
    charge = (await recorded_charges(stack))[0]
    assert charge.amount_micro_credits == price
    assert (charge.usage.model_id, charge.usage.provider, charge.usage.user) == ("gpt-image-1", "openai", "u1")
    assert body["usage"] == {"images": 1, "input_tokens": 50, "output_tokens": 4160, "total_tokens": 4210,
                             "megapixels": None, "credits_used": price,
                             "credits_remaining": 100_000_000 - price}
    assert body["data"][0]["watermark"] == "c2pa"


async def test_the_charge_never_exceeds_the_hold(stack: Stack) -> None:
    stack.peers.provider.behaviour["openai"] = provider_pb2.GenerateResponse(
        images=[image()], usage=common_pb2.UpstreamUsage(input_tokens=10, output_tokens=99_000))
    response = await generate(stack, {"model": "gpt-image-1", "prompt": "x"})
    assert (await recorded_charges(stack))[0].amount_micro_credits == 3_360_000
    assert response.json()["usage"]["credits_used"] == 3_360_000


async def test_unlimited_accounts_have_no_remaining_credits(stack: Stack) -> None:
    response = await stack.http.post("/v1/images/generations", headers={"Authorization": f"Bearer {UNLIMITED_KEY}"},
                                     json={"model": "dall-e-3", "prompt": "x"})
    usage = response.json()["usage"]
    assert usage["credits_remaining"] is None and usage["credits_used"] == DALL_E_3_PRICE
    answer = await call(stack.images.Generate, images_pb2.GenerateRequest(model="dall-e-3", prompt="x"),
                        timeout=CALL_TIMEOUT_SECONDS, metadata=(("authorization", f"Bearer {UNLIMITED_KEY}"),))
    assert not answer.usage.HasField("credits_remaining")
    # Usage is recorded with no lease and no hold.
    charges = await recorded_charges(stack, 2)
    assert [charge.lease_id for charge in charges] == ["", ""] and charges[0].usage.images == 1
    assert stack.peers.billing.count("AcquireLease") == 0 and stack.peers.billing.count("Reserve") == 0


async def test_an_unavailable_route_falls_back_to_the_next(stack: Stack) -> None:
    stack.peers.provider.behaviour["bedrock"] = ServiceError(Reason.UPSTREAM_UNAVAILABLE, "throttled")
    response = await generate(stack, {"model": NOVA, "prompt": "x"})
    assert response.status_code == 200
    assert [call.provider for call in stack.peers.provider.calls] == ["bedrock", "sandbox"]
    assert stack.peers.billing.count("AcquireLease") == 1 and stack.peers.billing.count("Charge") == 1
    assert (await recorded_charges(stack))[0].usage.provider == "sandbox"


async def test_fallback_stops_at_the_last_route(stack: Stack) -> None:
    for slug in ("bedrock", "sandbox"):
        stack.peers.provider.behaviour[slug] = ServiceError(Reason.UPSTREAM_UNAVAILABLE, "down")
    response = await generate(stack, {"model": NOVA, "prompt": "x"})
    assert response.status_code == 503
    assert len(stack.peers.provider.calls) == 2
    nothing_charged(stack)


async def test_a_rejected_parameter_does_not_fall_back(stack: Stack) -> None:
    stack.peers.provider.behaviour["bedrock"] = ServiceError(Reason.UPSTREAM_REJECTED, "bad size", field="size")
    response = await generate(stack, {"model": NOVA, "prompt": "x"})
    assert response.status_code == 400
    assert len(stack.peers.provider.calls) == 1


@pytest.mark.parametrize("pin", ["header", "prefix"])
async def test_a_pinned_provider_never_falls_back(stack: Stack, pin: str) -> None:
    stack.peers.provider.behaviour["bedrock"] = ServiceError(Reason.UPSTREAM_UNAVAILABLE, "throttled")
    if pin == "header":
        response = await generate(stack, {"model": NOVA, "prompt": "x"}, {"X-Quantized-Provider": "bedrock"})
    else:
        response = await generate(stack, {"model": f"bedrock/{NOVA}", "prompt": "x"})
    assert response.status_code == 503
    assert [call.provider for call in stack.peers.provider.calls] == ["bedrock"]
    nothing_charged(stack)


async def test_a_provider_prefix_is_echoed_in_the_response(stack: Stack) -> None:
    response = await generate(stack, {"model": f"sandbox/{NOVA}", "prompt": "x"})
    assert response.json()["model"] == f"sandbox/{NOVA}"
    assert stack.peers.provider.calls[0].model_id == NOVA


async def test_the_header_pins_a_provider(stack: Stack) -> None:
    response = await generate(stack, {"model": NOVA, "prompt": "x"}, {"X-Quantized-Provider": "sandbox"})
    assert response.status_code == 200
    assert stack.peers.catalog.calls[0][1].provider_override == "sandbox"
    assert [call.provider for call in stack.peers.provider.calls] == ["sandbox"]


async def test_authentication_routes_and_quotes_are_cached(stack: Stack) -> None:
    for _ in range(3):
        response = await generate(stack, {"model": "dall-e-3", "prompt": "x"})
        assert response.status_code == 200
    await call(stack.images.Generate, images_pb2.GenerateRequest(model="dall-e-3", prompt="x"),
               timeout=CALL_TIMEOUT_SECONDS, metadata=GRPC_AUTH)
    assert stack.peers.billing.count("Authenticate") == 1
    assert stack.peers.catalog.count("ResolveRoute") == 1
    assert stack.peers.catalog.count("QuotePrice") == 1
    assert stack.peers.billing.count("AcquireLease") == 1 and stack.peers.billing.count("Charge") == 4


async def test_a_failed_authentication_is_remembered_briefly(stack: Stack) -> None:
    """Within QUANTIZED_EDGE_AUTH_FAILURE_CACHE_TTL_SECONDS (5 s here) a refused
    token is refused again without asking billing; tests/edge/test_rate_limits.py
    shows it asked again afterwards."""
    stack.peers.billing.accounts.pop(VALID_KEY)
    assert (await generate(stack, {"model": "dall-e-3", "prompt": "x"})).status_code == 401
    stack.peers.billing.accounts[VALID_KEY] = Account("acct_valid", 100_000_000)
    assert (await generate(stack, {"model": "dall-e-3", "prompt": "x"})).status_code == 401
    assert stack.peers.billing.count("Authenticate") == 1


async def test_catalog_errors_are_cached_like_routes(stack: Stack) -> None:
    for _ in range(2):
        assert (await generate(stack, {"model": "no-such-model", "prompt": "x"})).status_code == 404
    assert stack.peers.catalog.count("ResolveRoute") == 1


class TestWithoutCaches:
    @pytest.fixture
    def edge_overrides(self) -> dict[str, object]:
        return {"auth_cache_ttl_seconds": 0, "catalog_cache_ttl_seconds": 0}

    async def test_every_request_asks_the_peers(self, stack: Stack) -> None:
        for _ in range(2):
            assert (await generate(stack, {"model": "dall-e-3", "prompt": "x"})).status_code == 200
        assert stack.peers.billing.count("Authenticate") == 2
        assert stack.peers.catalog.count("ResolveRoute") == 2


class TestDeadline:
    @pytest.fixture
    def edge_overrides(self) -> dict[str, object]:
        return {"request_timeout_seconds": 0.5}

    async def test_an_upstream_slower_than_the_deadline_is_unavailable(self, stack: Stack) -> None:
        async def slow(request: Any) -> Any:
            await asyncio.sleep(5)

        stack.peers.provider.behaviour["openai"] = slow
        response = await generate(stack, {"model": "dall-e-3", "prompt": "x"})
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "upstream_unavailable"
        nothing_charged(stack)


async def test_grpc_and_http_return_the_same_outcome(stack: Stack) -> None:
    http = (await generate(stack, {"model": "dall-e-3", "prompt": "same", "n": 2})).json()
    answer = await call(stack.images.Generate, images_pb2.GenerateRequest(model="dall-e-3", prompt="same", n=2),
                        timeout=CALL_TIMEOUT_SECONDS, metadata=GRPC_AUTH)
    assert answer.created == http["created"] and answer.model == http["model"]
    assert [base64.b64encode(entry.image_data).decode() for entry in answer.data] == [
        entry["b64_json"] for entry in http["data"]]
    assert [entry.revised_prompt for entry in answer.data] == [entry["revised_prompt"] for entry in http["data"]]
    assert answer.usage.images == http["usage"]["images"] == 2
    assert answer.usage.credits_used == http["usage"]["credits_used"]
    assert answer.request_id.startswith("req_")


async def test_a_large_image_crosses_both_transports_intact(stack: Stack) -> None:
    big = bytes(range(256)) * (12 * 4096)  # 12 MiB
    stack.peers.provider.behaviour["openai"] = provider_pb2.GenerateResponse(
        images=[image(big), flagged_image(), image(b"small")])
    response = await generate(stack, {"model": "dall-e-3", "prompt": "x", "n": 3})
    assert response.status_code == 200
    assert int(response.headers["content-length"]) == len(response.content)
    data = response.json()["data"]
    assert base64.b64decode(data[0]["b64_json"]) == big
    assert data[1]["b64_json"] is None and base64.b64decode(data[2]["b64_json"]) == b"small"
    answer = await call(stack.images.Generate, images_pb2.GenerateRequest(model="dall-e-3", prompt="x", n=3),
                        timeout=CALL_TIMEOUT_SECONDS, metadata=GRPC_AUTH)
    assert answer.data[0].image_data == big and answer.data[1].flagged


class TestExactHolds:
    """QUANTIZED_EDGE_CREDIT_LEASES=false: an exact hold per request, as before leases."""

    @pytest.fixture
    def edge_overrides(self) -> dict[str, object]:
        return {"credit_leases": False}

    async def test_each_request_reserves_and_settles_its_hold(self, stack: Stack) -> None:
        response = await generate(stack, {"model": "dall-e-3", "prompt": "x", "n": 2})
        assert response.status_code == 200
        billing = stack.peers.billing
        assert billing.requests("Reserve")[0].amount_micro_credits == 2 * DALL_E_3_PRICE
        assert billing.requests("Reserve")[0].request_id == response.headers["x-request-id"]
        assert billing.requests("Settle")[0].amount_micro_credits == 2 * DALL_E_3_PRICE
        assert billing.count("AcquireLease") == 0 and billing.count("Charge") == 0
        assert response.json()["usage"]["credits_remaining"] == 100_000_000 - 2 * DALL_E_3_PRICE

    async def test_a_failure_after_the_reserve_releases_the_hold(self, stack: Stack) -> None:
        stack.peers.provider.behaviour["openai"] = ServiceError(Reason.UPSTREAM_UNAVAILABLE, "timed out")
        response = await generate(stack, {"model": "dall-e-3", "prompt": "x"})
        assert response.status_code == 503
        billing = stack.peers.billing
        assert billing.count("Release") == 1 and billing.count("Settle") == 0
        assert billing.holds == {} and billing.accounts[VALID_KEY].balance == 100_000_000

    async def test_a_flagged_generation_settles_zero(self, stack: Stack) -> None:
        stack.peers.provider.behaviour["openai"] = provider_pb2.GenerateResponse(images=[flagged_image()])
        response = await generate(stack, {"model": "dall-e-3", "prompt": "x"})
        assert stack.peers.billing.requests("Settle")[0].amount_micro_credits == 0
        assert response.json()["usage"]["credits_remaining"] == 100_000_000
