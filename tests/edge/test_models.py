"""GET /v1/models and ImagesService.ListModels."""

from __future__ import annotations

import grpc
import pytest

from quantized.images.v1 import images_pb2
from quantized_runtime.client import call

from tests.edge.conftest import CALL_TIMEOUT_SECONDS, Stack
from tests.edge.fakes import VALID_KEY

AUTH = {"Authorization": f"Bearer {VALID_KEY}"}
GRPC_AUTH = (("authorization", f"Bearer {VALID_KEY}"),)


async def test_models_are_listed_with_discovery_fields(stack: Stack) -> None:
    response = await stack.http.get("/v1/models", headers=AUTH)
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    image_model, chat_model = body["data"]
    assert image_model == {
        "id": "gpt-image-1", "object": "model", "created": 1700000000, "owned_by": "openai",
        "supported_features": ["image_generation"],
        "input_modality": {"text": True, "image": False},
        "output_modality": {"text": False, "image": True},
        "watermark": "c2pa",
        "cost": {"per_token": {"input": 0.000005, "output": 0.00004}},
        "constraints": {"max_n": 1, "sizes": [], "quality_values": ["low", "high"], "notes": None},
        "providers": ["openai"], "active": True,
        "options": ["background", "output_format", "quality"], "output_formats": ["jpeg", "png"],
    }
    assert chat_model["output_modality"] == {"text": True, "image": False}
    assert chat_model["cost"] is None
    assert (chat_model["options"], chat_model["output_formats"]) == ([], [])


async def test_the_model_list_is_cached(stack: Stack) -> None:
    for _ in range(3):
        assert (await stack.http.get("/v1/models", headers=AUTH)).status_code == 200
    assert stack.peers.catalog.count("ListModels") == 1


async def test_http_and_grpc_share_one_cached_model_list(stack: Stack) -> None:
    # Alternating transports must not evict each other's rendering.
    for _ in range(2):
        assert (await stack.http.get("/v1/models", headers=AUTH)).status_code == 200
        answer = await stack.images.ListModels(images_pb2.ListModelsRequest(), metadata=GRPC_AUTH)
        assert [model.id for model in answer.models] == ["gpt-image-1", "gpt-4o"]
    assert stack.peers.catalog.count("ListModels") == 1


async def test_the_model_list_needs_a_key(stack: Stack) -> None:
    response = await stack.http.get("/v1/models")
    assert response.status_code == 401
    assert stack.peers.catalog.count("ListModels") == 0


async def test_grpc_list_models(stack: Stack) -> None:
    answer = await call(stack.images.ListModels, images_pb2.ListModelsRequest(),
                        timeout=CALL_TIMEOUT_SECONDS, metadata=(("authorization", f"Bearer {VALID_KEY}"),))
    assert [model.id for model in answer.models] == ["gpt-image-1", "gpt-4o"]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stack.images.ListModels(images_pb2.ListModelsRequest())
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_grpc_sends_the_request_id_in_initial_metadata(stack: Stack) -> None:
    call = stack.images.ListModels(images_pb2.ListModelsRequest(),
                                   metadata=(("authorization", f"Bearer {VALID_KEY}"),))
    await call
    metadata = dict(await call.initial_metadata())
    assert metadata["x-request-id"].startswith("req_")


async def test_grpc_mints_its_own_request_id_even_when_the_caller_sends_one(stack: Stack) -> None:
    # The id keys billing's idempotent hold: two calls sharing a caller's id must not share a hold.
    metadata = (("authorization", f"Bearer {VALID_KEY}"), ("x-request-id", "req_mine"))
    first = await stack.images.Generate(images_pb2.GenerateRequest(model="dall-e-3", prompt="x"), metadata=metadata)
    second = await stack.images.Generate(images_pb2.GenerateRequest(model="dall-e-3", prompt="x"), metadata=metadata)
    assert "req_mine" not in (first.request_id, second.request_id)
    assert first.request_id != second.request_id
    assert [call.request_id for call in stack.peers.provider.calls[-2:]] == [first.request_id, second.request_id]
