from __future__ import annotations

import base64

from quantized.images.v1 import images_pb2
from quantized_runtime.client import call

from tests.edge.conftest import CALL_TIMEOUT_SECONDS, Stack
from tests.edge.fakes import PNG_BYTES, VALID_KEY

AUTH = {"Authorization": f"Bearer {VALID_KEY}"}


async def test_http_generation_round_trip(stack: Stack) -> None:
    response = await stack.http.post("/v1/images/generations", headers=AUTH,
                                     json={"model": "dall-e-3", "prompt": "a hedgehog"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert base64.b64decode(body["data"][0]["b64_json"]) == PNG_BYTES
    assert response.headers["x-request-id"].startswith("req_")


async def test_grpc_generation_round_trip(stack: Stack) -> None:
    answer = await call(stack.images.Generate, images_pb2.GenerateRequest(model="dall-e-3", prompt="a hedgehog"),
                        timeout=CALL_TIMEOUT_SECONDS, metadata=(("authorization", f"Bearer {VALID_KEY}"),))
    assert answer.data[0].image_data == PNG_BYTES
