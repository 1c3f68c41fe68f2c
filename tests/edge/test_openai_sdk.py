"""The official openai SDK against the running edge: the spec's examples, the model
list and each typed error (max_retries=0: the SDK would retry 5xx)."""

from __future__ import annotations

import base64

import openai
import pytest

from quantized_runtime.errors import Reason, ServiceError

from tests.edge.conftest import Stack
from tests.edge.fakes import PNG_BYTES, POOR_KEY, VALID_KEY


async def test_spec_example_dall_e_3(stack: Stack) -> None:
    async with stack.openai_client() as client:
        resp = await client.images.generate(model="dall-e-3", prompt="A whimsical watercolor of a sleepy hedgehog",
                                            size="1024x1024", quality="standard")
    assert base64.b64decode(resp.data[0].b64_json) == PNG_BYTES
    assert resp.data[0].revised_prompt == "revised: A whimsical watercolor of a sleepy hedgehog"
    assert resp.data[0].url is None
    assert resp.created == 1777975004


async def test_spec_example_gpt_image_1(stack: Stack) -> None:
    async with stack.openai_client() as client:
        resp = await client.images.generate(
            model="gpt-image-1", prompt="A logo on a fully transparent background, single hedgehog character",
            quality="medium", background="transparent", output_format="png")
    assert base64.b64decode(resp.data[0].b64_json) == PNG_BYTES
    params = stack.peers.provider.calls[0].params
    assert params.background == 1 and params.output_format == 1 and params.quality == 4


async def test_the_model_list_parses(stack: Stack) -> None:
    async with stack.openai_client() as client:
        page = await client.models.list()
    models = {model.id: model for model in page.data}
    assert set(models) == {"gpt-image-1", "gpt-4o"}
    image_models = [m.id for m in page.data if "image_generation" in (m.model_extra or {}).get("supported_features", [])]
    assert image_models == ["gpt-image-1"]


async def test_validation_errors_are_unprocessable(stack: Stack) -> None:
    async with stack.openai_client() as client:
        with pytest.raises(openai.UnprocessableEntityError) as raised:
            await client.images.generate(model="dall-e-3", prompt="x", response_format="url")
    assert raised.value.status_code == 422
    assert raised.value.body["param"] == "response_format"
    assert raised.value.request_id


async def test_a_bad_key_is_an_authentication_error(stack: Stack) -> None:
    async with stack.openai_client(api_key="sk-quantized-wrong") as client:
        with pytest.raises(openai.AuthenticationError):
            await client.images.generate(model="dall-e-3", prompt="x")


async def test_an_unknown_model_is_not_found(stack: Stack) -> None:
    async with stack.openai_client() as client:
        with pytest.raises(openai.NotFoundError) as raised:
            await client.images.generate(model="dall-e-9", prompt="x")
    assert raised.value.body["code"] == "model_not_found"


async def test_a_chat_model_is_a_bad_request(stack: Stack) -> None:
    async with stack.openai_client() as client:
        with pytest.raises(openai.BadRequestError) as raised:
            await client.images.generate(model="gpt-4o", prompt="x")
    assert raised.value.body["code"] == "modality_mismatch"


async def test_insufficient_credits_is_a_402_status_error(stack: Stack) -> None:
    async with stack.openai_client(api_key=POOR_KEY) as client:
        with pytest.raises(openai.APIStatusError) as raised:
            await client.images.generate(model="dall-e-3", prompt="x")
    assert raised.value.status_code == 402


async def test_an_unavailable_upstream_is_an_internal_server_error(stack: Stack) -> None:
    stack.peers.provider.behaviour["openai"] = ServiceError(Reason.UPSTREAM_UNAVAILABLE, "upstream timed out")
    async with stack.openai_client() as client:
        with pytest.raises(openai.InternalServerError) as raised:
            await client.images.generate(model="gpt-image-1", prompt="x")
    assert raised.value.status_code == 503
    assert len(stack.peers.provider.calls) == 1


async def test_spec_httpx_example(stack: Stack) -> None:
    """The spec's httpx example with the base URL changed (async, as the edge shares this loop)."""
    response = await stack.http.post(
        f"{stack.base_url}/v1/images/generations",
        headers={"Authorization": f"Bearer {VALID_KEY}"},
        json={"model": "gpt-image-1", "prompt": "An overhead view of an open notebook with a pen",
              "size": "1024x1024", "quality": "low"},
        timeout=180,
    )
    data = response.json()
    img_bytes = base64.b64decode(data["data"][0]["b64_json"])
    assert img_bytes == PNG_BYTES and data["data"][0]["watermark"] == "c2pa"
