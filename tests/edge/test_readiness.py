"""The edge's health follows billing and provider_svc (issue 15, item 4): `GET
/healthz` is liveness, `GET /readyz` and the gRPC health turn not ready while a
peer the edge needs fails its health check for longer than the grace period,
and ready again once it is back. Neither needs authentication; neither is in the
OpenAPI document, which lists /v1 only."""

from __future__ import annotations

import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from quantized_runtime.channels import open_channel
from tests.edge.conftest import Stack, edge_settings
from tests.harness import serving
from tests.polling import eventually_true

from edge.main import start
from edge.servicer import SERVICE_NAMES
from edge.readiness import BILLING_SERVICE_NAME

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def edge_overrides() -> dict[str, object]:
    return {"peer_down_grace_seconds": 0.5}


async def _edge_health(stack: Stack) -> set[int]:
    async with open_channel(f"127.0.0.1:{stack.edge.grpc_port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return {(await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)).status
                for name in ("", *SERVICE_NAMES)}


async def test_healthz_is_liveness_without_authentication(stack: Stack):
    reply = await stack.http.get("/healthz")
    assert reply.status_code == 200
    assert reply.json() == {"status": "ok"}
    assert reply.headers["x-request-id"].startswith("req_")


async def test_readyz_and_grpc_health_follow_billing_and_come_back(stack: Stack):
    async def ready() -> bool:
        return (await stack.http.get("/readyz")).status_code == 200

    # Ready once both peers have answered their first health check.
    await eventually_true(ready)
    reply = await stack.http.get("/readyz")
    assert reply.json() == {"ready": True, "unavailable": []}
    assert await _edge_health(stack) == {SERVING}

    await stack.peers.server.health.set(BILLING_SERVICE_NAME, NOT_SERVING)

    async def not_ready() -> bool:
        return (await stack.http.get("/readyz")).status_code == 503
    await eventually_true(not_ready)
    reply = await stack.http.get("/readyz")
    assert reply.json() == {"ready": False, "unavailable": ["billing"]}
    assert await _edge_health(stack) == {NOT_SERVING}

    await stack.peers.server.health.set(BILLING_SERVICE_NAME, SERVING)
    await eventually_true(ready)
    assert await _edge_health(stack) == {SERVING}


async def test_an_edge_whose_peers_never_answered_is_not_ready(peers):
    await peers.server.stop(0)
    async with serving(start(edge_settings(peers.address)), port=lambda edge: edge.grpc_port) as served:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{served.running.http_port}") as http:
            reply = await http.get("/readyz")
            assert reply.status_code == 503
            assert reply.json()["unavailable"] == ["billing", "provider"]


async def test_readyz_names_every_peer_that_cannot_be_reached(stack: Stack):
    await stack.peers.server.stop(0)

    async def both_down() -> bool:
        reply = await stack.http.get("/readyz")
        return reply.status_code == 503 and reply.json()["unavailable"] == ["billing", "provider"]
    await eventually_true(both_down)
    assert (await stack.http.get("/healthz")).status_code == 200


async def test_the_probes_are_not_in_the_openapi_document(stack: Stack):
    paths = (await stack.http.get("/openapi.json")).json()["paths"]
    assert paths and all(path.startswith("/v1/") for path in paths)
