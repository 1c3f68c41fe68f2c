"""The whole router, every service real, upstreams faked on the wire: the spec's own
examples run as written, the error table end to end, routing changes, money."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import grpc
import httpx
import openai
import pytest

from quantized.images.v1 import images_pb2, images_pb2_grpc
from quantized_runtime.grpc_errors import from_rpc_error
from tests.e2e.stack import Stack
from tests.fake_upstreams import big_png

pytestmark = pytest.mark.slow

OPENING_CREDITS = 100_000_000
# Catalog and auth caches are shortened for the stack; "visible within 5 s" is the contract.
VISIBILITY_DEADLINE_SECONDS = 5.0


@pytest.fixture
def upstreams(stack: Stack) -> Iterator[Stack]:
    for fake in (stack.openai, stack.bedrock, stack.google):
        fake.reset()
    yield stack
    for fake in (stack.openai, stack.bedrock, stack.google):
        fake.reset()
        fake.image_override = None


def _post(stack: Stack, key: str, body: dict, headers: dict | None = None) -> httpx.Response:
    return httpx.post(f"{stack.base_url}/images/generations", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {key}", **(headers or {})})


def _eventually(check: Callable[[], bool]) -> bool:
    give_up = time.monotonic() + VISIBILITY_DEADLINE_SECONDS
    while time.monotonic() < give_up:
        if check():
            return True
        time.sleep(0.2)
    return check()


def _balance(stack: Stack, account_id: str) -> int:
    """Credits granted minus credits charged: the edge's credit lease may hold
    some of them aside, which spends nothing."""
    return _spendable(stack.account(account_id).account)


def _spendable(account) -> int:
    return account.balance_micro_credits + account.held_micro_credits


# The spec's examples, run as written (base URL and key substituted).

@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_spec_curl_example_for_gpt_image_1(upstreams):
    account = upstreams.create_account(OPENING_CREDITS)
    command = f"""curl -s -X POST {upstreams.base_url}/images/generations \\
-H "Authorization: Bearer {account.api_key}" \\
-H "Content-Type: application/json" \\
-d '{{
"model": "gpt-image-1",
"prompt": "A logo on a fully transparent background, single hedgehog character",
"quality": "medium",
"background": "transparent",
"output_format": "png"
}}'"""
    reply = json.loads(subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                                      check=True, timeout=60).stdout)
    assert reply["model"] == "gpt-image-1"
    assert reply["data"][0]["watermark"] == "c2pa" and reply["data"][0]["flagged"] is False
    assert base64.b64decode(reply["data"][0]["b64_json"]).startswith(b"\x89PNG")
    usage = reply["usage"]
    assert usage["images"] == 1 and isinstance(usage["input_tokens"], int)
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert usage["credits_used"] > 0
    assert usage["credits_remaining"] == OPENING_CREDITS - usage["credits_used"]
    assert _balance(upstreams, account.account_id) == usage["credits_remaining"]
    sent = upstreams.openai.last.json()
    assert (sent["model"], sent["quality"], sent["background"], sent["output_format"]) == (
        "gpt-image-1", "medium", "transparent", "png")
    assert "response_format" not in sent


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_spec_curl_example_for_dall_e_3_answers_no_active_providers(upstreams):
    account = upstreams.create_account(OPENING_CREDITS)
    command = f"""curl -s -w '\\n%{{http_code}}' -X POST {upstreams.base_url}/images/generations \\
-H "Authorization: Bearer {account.api_key}" \\
-H "Content-Type: application/json" \\
-d '{{
"model": "dall-e-3",
"prompt": "A whimsical watercolor of a sleepy hedgehog under a mushroom",
"size": "1024x1024",
"quality": "standard"
}}'"""
    body, status = subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                                  check=True, timeout=60).stdout.rsplit("\n", 1)
    assert status == "400"
    assert json.loads(body)["error"]["message"].startswith("No active providers")
    assert upstreams.openai.requests == []


def test_spec_httpx_example_as_written(upstreams):
    account = upstreams.create_account(OPENING_CREDITS)
    example = f'''
import base64
import httpx
response = httpx.post(
"{upstreams.base_url}/images/generations",
headers={{"Authorization": "Bearer {account.api_key}"}},
json={{
"model": "gpt-image-1",
"prompt": "An overhead view of an open notebook with a pen",
"size": "1024x1024",
"quality": "low",
}},
timeout=180,
)
data = response.json()
img_bytes = base64.b64decode(data["data"][0]["b64_json"])
print(f"image: {{len(img_bytes)}} bytes, watermark: {{data['data'][0]['watermark']}}")
'''
    printed = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True,
                             check=True, timeout=60).stdout
    assert printed.startswith("image: ") and printed.strip().endswith("watermark: c2pa")


def test_spec_openai_sdk_example(upstreams, tmp_path):
    account = upstreams.create_account(OPENING_CREDITS)
    client = openai.OpenAI(api_key=account.api_key, base_url=upstreams.base_url, max_retries=0)
    with pytest.raises(openai.BadRequestError) as retired:
        client.images.generate(model="dall-e-3", prompt="A whimsical watercolor of a sleepy hedgehog",
                               size="1024x1024", quality="standard")
    assert "No active providers" in retired.value.message
    resp = client.images.generate(model="gpt-image-1", prompt="A whimsical watercolor of a sleepy hedgehog",
                                  size="1024x1024", quality="low")
    img_bytes = base64.b64decode(resp.data[0].b64_json)
    (tmp_path / "hedgehog.png").write_bytes(img_bytes)
    assert img_bytes.startswith(b"\x89PNG")


def test_models_list_supports_both_filters_of_the_spec(upstreams):
    account = upstreams.create_account(OPENING_CREDITS)
    client = openai.OpenAI(api_key=account.api_key, base_url=upstreams.base_url, max_retries=0)
    models = [m.model_dump() for m in client.models.list()]
    by_feature = {m["id"] for m in models if "image_generation" in m.get("supported_features", [])}
    by_modality = {m["id"] for m in models if m["output_modality"]["image"]}
    assert by_feature == by_modality
    assert {"gpt-image-1", "dall-e-3", "amazon.nova-canvas-v1:0", "imagen-4.0-generate-001",
            "gemini-2.5-flash-image", "sandbox-image-1"} <= by_feature
    assert "gpt-4o-mini" not in by_feature


# The error table, end to end through the real services.

@pytest.mark.parametrize(("body", "headers", "status", "message"), [
    ({"model": "no-such-model", "prompt": "x"}, {}, 404, "no-such-model"),
    ({"model": "gpt-4o-mini", "prompt": "x"}, {}, 400, "image"),
    ({"model": "gpt-image-1", "prompt": "x"}, {"X-Quantized-Provider": "bedrock"}, 400, "bedrock"),
    ({"model": "gpt-image-1", "prompt": "x"}, {"X-Quantized-Provider": "acme"}, 400, "openai"),
    ({"model": "amazon.nova-canvas-v1:0", "prompt": "x"}, {}, 400, "No active providers"),
    ({"model": "gpt-image-1", "prompt": "x", "response_format": "url"}, {}, 422, "response_format"),
])
def test_error_table_through_the_real_services(upstreams, body, headers, status, message):
    account = upstreams.create_account(OPENING_CREDITS)
    reply = _post(upstreams, account.api_key, body, headers)
    assert reply.status_code == status, reply.text
    assert message in reply.json()["error"]["message"]
    assert reply.headers["x-request-id"]
    assert upstreams.openai.requests == [] and upstreams.bedrock.requests == []
    assert _balance(upstreams, account.account_id) == OPENING_CREDITS


def test_invalid_key_is_401(upstreams):
    reply = _post(upstreams, "sk-quantized-not-a-real-key", {"model": "gpt-image-1", "prompt": "x"})
    assert reply.status_code == 401
    assert "sk-quantized-not-a-real-key" not in reply.text


def test_insufficient_credits_is_402_and_never_calls_upstream(upstreams):
    account = upstreams.create_account(credits=1)
    reply = _post(upstreams, account.api_key, {"model": "gpt-image-1", "prompt": "x"})
    assert reply.status_code == 402
    assert upstreams.openai.requests == []
    assert _balance(upstreams, account.account_id) == 1


def test_upstream_rate_limit_is_503_and_releases_the_hold(upstreams):
    account = upstreams.create_account(OPENING_CREDITS)
    upstreams.openai.always(upstreams.openai.error("rate_limit"))
    reply = _post(upstreams, account.api_key, {"model": "gpt-image-1", "prompt": "x"})
    assert reply.status_code == 503
    assert "openai" in reply.json()["error"]["message"]
    assert upstreams.openai.api_key not in reply.text
    shown = upstreams.account(account.account_id)
    assert _spendable(shown.account) == OPENING_CREDITS


def test_upstream_parameter_rejection_is_400_naming_the_upstream_not_quoting_it(upstreams):
    account = upstreams.create_account(OPENING_CREDITS)
    upstreams.openai.then(upstreams.openai.error("invalid_value"))
    reply = _post(upstreams, account.api_key, {"model": "gpt-image-1", "prompt": "x"})
    assert reply.status_code == 400
    assert reply.json()["error"]["message"] == (
        f"the openai upstream rejected the request (request id {reply.headers['x-request-id']})")
    assert _balance(upstreams, account.account_id) == OPENING_CREDITS


# Routing changes made by operators show through the edge.

def test_activating_a_bedrock_row_routes_there_without_a_header(upstreams):
    account = upstreams.create_account(OPENING_CREDITS)
    body = {"model": "amazon.nova-canvas-v1:0", "prompt": "a hedgehog"}
    upstreams.set_active("bedrock", "amazon.nova-canvas-v1:0", True)
    try:
        assert _eventually(lambda: _post(upstreams, account.api_key, body).status_code == 200)
        reply = _post(upstreams, account.api_key, {**body, "model": "bedrock/amazon.nova-canvas-v1:0"})
        assert reply.status_code == 200, reply.text
        assert reply.json()["model"] == "bedrock/amazon.nova-canvas-v1:0"
        assert reply.json()["data"][0]["watermark"] == "provenance"
        assert reply.json()["usage"]["megapixels"] > 0
        assert upstreams.bedrock.last.path == "/model/amazon.nova-canvas-v1:0/invoke"
    finally:
        upstreams.set_active("bedrock", "amazon.nova-canvas-v1:0", False)
    assert _eventually(lambda: _post(upstreams, account.api_key, body).status_code == 400)


def test_flagged_generation_costs_nothing(upstreams):
    account = upstreams.create_account(OPENING_CREDITS)
    upstreams.set_active("bedrock", "amazon.titan-image-generator-v2:0", True)
    upstreams.bedrock.always(upstreams.bedrock.output_all_blocked)
    body = {"model": "amazon.titan-image-generator-v2:0", "prompt": "something blocked"}
    try:
        assert _eventually(lambda: _post(upstreams, account.api_key, body).status_code == 200)
        reply = _post(upstreams, account.api_key, body).json()
    finally:
        upstreams.set_active("bedrock", "amazon.titan-image-generator-v2:0", False)
    assert reply["data"][0]["flagged"] is True
    assert reply["usage"]["images"] == 0 and reply["usage"]["credits_used"] == 0
    assert _balance(upstreams, account.account_id) == OPENING_CREDITS


def test_a_revoked_key_stops_working_within_the_cache_time(upstreams):
    account = upstreams.create_account(OPENING_CREDITS)
    body = {"model": "sandbox-image-1", "prompt": "a hedgehog", "size": "64x64"}
    assert _post(upstreams, account.api_key, body).status_code == 200
    upstreams.revoke_key(account.key_id)
    assert _eventually(lambda: _post(upstreams, account.api_key, body).status_code == 401)


# Money adds up.

def test_balance_equals_opening_credits_minus_what_responses_reported(upstreams):
    account = upstreams.create_account(OPENING_CREDITS)
    used = 0
    for n in (1, 2, 3):
        reply = _post(upstreams, account.api_key,
                      {"model": "sandbox-image-1", "prompt": f"hedgehog {n}", "n": n, "size": "64x64"})
        assert reply.status_code == 200, reply.text
        assert len(reply.json()["data"]) == n == reply.json()["usage"]["images"]
        used += reply.json()["usage"]["credits_used"]
        assert reply.json()["usage"]["credits_remaining"] == OPENING_CREDITS - used
    shown = upstreams.account(account.account_id)
    assert _spendable(shown.account) == OPENING_CREDITS - used
    assert sum(entry.micro_credits for entry in shown.recent_usage) == used


def test_unlimited_account_reports_null_credits_remaining(upstreams):
    account = upstreams.create_account(unlimited=True)
    reply = _post(upstreams, account.api_key, {"model": "sandbox-image-1", "prompt": "x", "size": "64x64"})
    assert reply.status_code == 200
    assert reply.json()["usage"]["credits_remaining"] is None


# Internal callers over gRPC get the same flow.

def test_grpc_images_service_generates_and_reports_typed_errors(upstreams):
    account = upstreams.create_account(OPENING_CREDITS)
    metadata = [("authorization", f"Bearer {account.api_key}")]
    with grpc.insecure_channel(upstreams.edge_grpc_addr) as channel:
        stub = images_pb2_grpc.ImagesServiceStub(channel)
        reply = stub.Generate(images_pb2.GenerateRequest(model="sandbox-image-1", prompt="x", size="64x32"),
                              metadata=metadata, timeout=30)
        with pytest.raises(grpc.RpcError) as missing:
            stub.Generate(images_pb2.GenerateRequest(model="no-such-model", prompt="x"),
                          metadata=metadata, timeout=30)
    assert reply.data[0].image_data.startswith(b"\x89PNG")
    assert reply.usage.credits_used > 0
    assert from_rpc_error(missing.value).reason == "MODEL_NOT_FOUND"


def test_a_30_mb_image_passes_through_intact(upstreams):
    account = upstreams.create_account(OPENING_CREDITS)
    upstreams.openai.image_override = big_png()
    reply = _post(upstreams, account.api_key, {"model": "gpt-image-1", "prompt": "a very big hedgehog"})
    assert reply.status_code == 200
    assert base64.b64decode(reply.json()["data"][0]["b64_json"]) == upstreams.openai.image_override


def test_grpc_callers_reusing_a_request_id_are_each_served_and_charged(upstreams):
    account = upstreams.create_account(OPENING_CREDITS)
    metadata = [("authorization", f"Bearer {account.api_key}"), ("x-request-id", "req_reused")]
    with grpc.insecure_channel(upstreams.edge_grpc_addr) as channel:
        stub = images_pb2_grpc.ImagesServiceStub(channel)
        replies = [stub.Generate(images_pb2.GenerateRequest(model="sandbox-image-1", prompt="x", size="16x16"),
                                 metadata=metadata, timeout=30) for _ in range(2)]
    used = sum(reply.usage.credits_used for reply in replies)
    assert all(reply.usage.credits_used > 0 for reply in replies)
    assert _balance(upstreams, account.account_id) == OPENING_CREDITS - used
