"""A real edge (HTTP + gRPC) in front of fake peers on a real grpc.aio server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import openai
import pytest

from quantized.images.v1 import images_pb2_grpc

from edge.main import RunningEdge, start
from edge.settings import EdgeSettings
from tests.edge.fakes import VALID_KEY, Peers, start_fake_peers
from tests.harness import serving

# The deadline of a test's own gRPC call to the edge.
CALL_TIMEOUT_SECONDS = 30.0


@dataclass
class Stack:
    peers: Peers
    edge: RunningEdge
    http: httpx.AsyncClient
    images: images_pb2_grpc.ImagesServiceStub

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.edge.http_port}"

    def openai_client(self, api_key: str = VALID_KEY) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(api_key=api_key, base_url=f"{self.base_url}/v1", max_retries=0,
                                  http_client=httpx.AsyncClient())


def edge_settings(peer_address: str, **overrides: object) -> EdgeSettings:
    values: dict[str, object] = {
        "host": "127.0.0.1", "port": 0, "listen": "127.0.0.1:0",
        "catalog_addr": peer_address, "billing_addr": peer_address, "provider_addr": peer_address,
        "request_timeout_seconds": 20.0, "shutdown_grace_seconds": 1.0,
    }
    values.update(overrides)
    return EdgeSettings(**values)


@pytest.fixture
async def peers() -> AsyncIterator[Peers]:
    """The fake catalog, billing and provider on a real gRPC server, without an edge."""
    running = await start_fake_peers()
    try:
        yield running
    finally:
        await running.server.stop(None)


@pytest.fixture
def edge_overrides() -> dict[str, object]:
    """Override in a test module to start the edge with other settings."""
    return {}


@pytest.fixture
async def stack(edge_overrides: dict[str, object]) -> AsyncIterator[Stack]:
    peers = await start_fake_peers()
    try:
        async with serving(start(edge_settings(peers.address, **edge_overrides)),
                           port=lambda edge: edge.grpc_port, stop_grace_seconds=0.5) as served:
            edge = served.running
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{edge.http_port}",
                                         timeout=30) as http:
                yield Stack(peers, edge, http, images_pb2_grpc.ImagesServiceStub(served.channel))
    finally:
        await peers.server.stop(0)
