"""provider_svc under test: a real grpc.aio server wired to the fake upstreams."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from catalog_svc.catalog_file import load_catalog_file
from catalog_svc.settings import BUNDLED_CATALOG_FILE
from catalog_svc.servicer import constraints_message
from provider_svc.main import RunningProvider, start
from provider_svc.settings import ProviderSettings
from quantized.common.v1 import errors_pb2, images_pb2
from quantized.provider.v1 import provider_pb2, provider_pb2_grpc
from quantized_runtime.errors import ServiceError, from_call_error
from tests.fake_upstreams import FakeBedrock, FakeGoogle, FakeOpenAI
from tests.fake_upstreams.fixtures import fake_bedrock, fake_google, fake_openai
from tests.harness import serving

__all__ = ["fake_bedrock", "fake_google", "fake_openai"]

PROVIDER_OF = {
    "gpt-image-1": "openai", "dall-e-2": "openai", "dall-e-3": "openai",
    "amazon.titan-image-generator-v2:0": "bedrock", "amazon.nova-canvas-v1:0": "bedrock",
    "stability.stable-image-core-v1:0": "bedrock", "stability.stable-image-ultra-v1:0": "bedrock",
    "stability.sd3-5-large-v1:0": "bedrock",
    "gemini-2.5-flash-image": "gemini", "imagen-4.0-generate-001": "gemini",
    "imagen-4.0-fast-generate-001": "gemini", "imagen-4.0-ultra-generate-001": "gemini",
    "sandbox-image-1": "sandbox",
}
REGION_OF = {model: "us-west-2" if model.startswith("stability.") else "us-east-1"
             for model in PROVIDER_OF if PROVIDER_OF[model] == "bedrock"}

_ENUM_PREFIX = {"quality": ("Quality", "QUALITY_"), "style": ("Style", "STYLE_"),
                "background": ("Background", "BACKGROUND_"),
                "output_format": ("OutputFormat", "OUTPUT_FORMAT_"), "moderation": ("Moderation", "MODERATION_")}


def params(prompt: str = "a hedgehog under a mushroom", **fields: Any) -> images_pb2.GenerationParams:
    """GenerationParams from JSON-style values ("hd", "png"), as the edge would dispatch them."""
    values: dict[str, Any] = {"prompt": prompt, "n": fields.pop("n", 1), "size": fields.pop("size", "1024x1024")}
    for name, value in fields.items():
        if name in _ENUM_PREFIX:
            enum_name, prefix = _ENUM_PREFIX[name]
            value = getattr(images_pb2, enum_name).Value(prefix + value.upper())
        values[name] = value
    return images_pb2.GenerationParams(**values)


_CATALOG = {model.id: model for model in load_catalog_file(BUNDLED_CATALOG_FILE).models}


def generate_request(model: str, *, watermark: int = images_pb2.WATERMARK_NONE, provider: str | None = None,
                     region: str | None = None, request_id: str = "req_test",
                     **fields: Any) -> provider_pb2.GenerateRequest:
    """The request the edge would send for `model`, with its route's provider and region, and the
    adapter and constraints of the model's first route in the catalog file (none for an unknown model)."""
    entry = _CATALOG.get(model)
    return provider_pb2.GenerateRequest(
        provider=provider or PROVIDER_OF.get(model, "openai"), model_id=model, upstream_model_id=model,
        region=REGION_OF.get(model, "") if region is None else region, params=params(**fields),
        request_id=request_id, watermark=watermark,
        adapter=(entry.routes[0].adapter or "") if entry is not None else "",
        constraints=constraints_message(entry.constraints) if entry is not None else None)


# How much longer than the call's own budget the one-call stream may take to end.
STREAM_END_MARGIN_SECONDS = 10


async def generate_once(stub: provider_pb2_grpc.ProviderServiceStub, request: provider_pb2.GenerateRequest,
                        timeout: float) -> provider_pb2.GenerateResponse | errors_pb2.CallError:
    """One call on a GenerateStream of its own, read off the wire: its response
    (with the bytes of chunked images put back) or its CallError. The stream must
    then end OK."""
    stream = stub.GenerateStream()
    chunks: defaultdict[int, list[bytes]] = defaultdict(list)
    answers = []
    async with asyncio.timeout(timeout + STREAM_END_MARGIN_SECONDS):
        await stream.write(provider_pb2.GenerateStreamRequest(call_id=1, request=request, timeout_seconds=timeout))
        await stream.done_writing()
        async for answer in stream:
            assert answer.call_id == 1 or answer.draining
            if answer.WhichOneof("answer") == "chunk":
                chunks[answer.chunk.image_index].append(answer.chunk.data)
            elif answer.WhichOneof("answer") is not None:
                answers.append(answer)
        assert await stream.code() == grpc.StatusCode.OK
    [answer] = answers
    if answer.WhichOneof("answer") == "error":
        return answer.error
    for index, parts in chunks.items():
        answer.response.images[index].image_data = b"".join(parts)
    return answer.response


@dataclass
class Harness:
    running: RunningProvider
    channel: grpc.aio.Channel
    stub: provider_pb2_grpc.ProviderServiceStub
    openai: FakeOpenAI
    bedrock: FakeBedrock
    google: FakeGoogle

    async def generate(self, model: str, *, timeout: float = 30, **fields: Any) -> provider_pb2.GenerateResponse:
        """The call's response; its error is raised as the ServiceError it carries."""
        answer = await generate_once(self.stub, generate_request(model, **fields), timeout)
        if isinstance(answer, errors_pb2.CallError):
            raise from_call_error(answer)
        return answer

    async def fail(self, model: str, *, timeout: float = 30, **fields: Any) -> ServiceError:
        answer = await generate_once(self.stub, generate_request(model, **fields), timeout)
        assert isinstance(answer, errors_pb2.CallError), "the call succeeded"
        return from_call_error(answer)


# The fake upstreams serve every model of the catalog, so these tests allow them all.
EVERY_FAKE_UPSTREAM_MODEL = ["openai/*", "bedrock/*", "gemini/*", "sandbox/*"]
TEST_REGIONS = ["us-east-1", "us-west-2", "us-central1", "eu-west-1"]


def settings_for(openai: FakeOpenAI, bedrock: FakeBedrock, google: FakeGoogle, **overrides: Any) -> ProviderSettings:
    values: dict[str, Any] = dict(
        listen="127.0.0.1:0", upstream_timeout_seconds=15.0, upstream_retries=2, retry_backoff_seconds=0.01,
        bedrock_max_workers=4,
        openai_base_url=openai.base_url, openai_api_key=openai.api_key,
        bedrock_endpoint_url=bedrock.url,
        gemini_api_key=google.gemini_api_key, gemini_base_url=google.base_url,
        vertex_api_key=google.vertex_api_key, vertex_base_url=google.base_url,
        allowed_models=EVERY_FAKE_UPSTREAM_MODEL, allowed_regions=TEST_REGIONS,
    )
    values.update(overrides)
    return ProviderSettings(**values)


@pytest.fixture
async def harness_factory(fake_openai: FakeOpenAI, fake_bedrock: FakeBedrock,
                          fake_google: FakeGoogle) -> AsyncIterator[Any]:
    async with contextlib.AsyncExitStack() as started:

        async def make(**overrides: Any) -> Harness:
            served = await started.enter_async_context(serving(
                start(settings_for(fake_openai, fake_bedrock, fake_google, **overrides))))
            return Harness(served.running, served.channel,
                           provider_pb2_grpc.ProviderServiceStub(served.channel),
                           fake_openai, fake_bedrock, fake_google)

        yield make


@pytest.fixture
async def harness(harness_factory: Any) -> Harness:
    return await harness_factory()
