"""A peer address may name several replicas: the channel spreads calls round robin
over them and skips one that has gone (quantized_runtime/channels.py)."""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from quantized_runtime.channels import grpc_target, open_channel
from quantized_runtime.server import create_server

MAX_MESSAGE_BYTES = 1024 * 1024
STOP_NOTICED_ATTEMPTS = 20


@pytest.mark.parametrize(("address", "target"), [
    ("127.0.0.1:50052", "127.0.0.1:50052"),
    ("billing:50052", "billing:50052"),
    ("dns:///billing.quantized.svc.cluster.local:50052", "dns:///billing.quantized.svc.cluster.local:50052"),
    ("127.0.0.1:50052, 127.0.0.1:50062", "ipv4:127.0.0.1:50052,127.0.0.1:50062"),
    ("[::1]:50052,[::1]:50062", "ipv6:[::1]:50052,[::1]:50062"),
    ("ipv4:10.0.0.1:50052,10.0.0.2:50052", "ipv4:10.0.0.1:50052,10.0.0.2:50052"),
])
def test_a_peer_address_becomes_a_grpc_target(address, target):
    assert grpc_target(address) == target


@pytest.mark.parametrize("address", ["billing-0:50052,billing-1:50052", "127.0.0.1:1,[::1]:2"])
def test_a_list_of_names_or_mixed_ip_versions_is_refused(address):
    with pytest.raises(ValueError, match="IP:port pairs of one IP version"):
        grpc_target(address)


async def _replica(status: health_pb2.HealthCheckResponse.ServingStatus.ValueType):
    """A server whose health answer for the service "replica" says which replica answered."""
    running = await create_server("127.0.0.1:0", [], [], MAX_MESSAGE_BYTES)
    await running.health.set("replica", status)
    return running


async def test_calls_alternate_over_the_listed_replicas_and_skip_a_stopped_one():
    first = await _replica(health_pb2.HealthCheckResponse.SERVING)
    second = await _replica(health_pb2.HealthCheckResponse.NOT_SERVING)
    channel = open_channel(f"127.0.0.1:{first.port},127.0.0.1:{second.port}", MAX_MESSAGE_BYTES)
    try:
        health = health_pb2_grpc.HealthStub(channel)
        await channel.channel_ready()

        async def answers(calls: int) -> Counter:
            replies = [await health.Check(health_pb2.HealthCheckRequest(service="replica"), timeout=5)
                       for _ in range(calls)]
            return Counter(reply.status for reply in replies)

        # round_robin connects to both; once both are ready, calls alternate.
        await answers(4)
        assert await answers(10) == {health_pb2.HealthCheckResponse.SERVING: 5,
                                     health_pb2.HealthCheckResponse.NOT_SERVING: 5}
        await first.stop(0)
        # A call racing the stop may still fail; once the channel has seen the first
        # replica go, every call reaches the second.
        for _ in range(STOP_NOTICED_ATTEMPTS):
            try:
                await answers(1)
                break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.05)
        assert await answers(6) == {health_pb2.HealthCheckResponse.NOT_SERVING: 6}
    finally:
        await channel.close()
        await second.stop(0)
        await first.stop(0)
