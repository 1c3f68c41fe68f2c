"""Waiting for a gRPC service to report SERVING on the standard health service."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


async def is_serving(address: str, timeout: float = 1.0) -> bool:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING


async def wait_until_serving(address: str, deadline_seconds: float,
                             still_running: Callable[[], bool]) -> None:
    """Poll until SERVING; fail early if the process behind it has exited."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline_seconds
    while loop.time() < give_up:
        if not still_running():
            raise RuntimeError(f"the service at {address} exited before it became healthy")
        if await is_serving(address):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the service at {address} was not healthy within {deadline_seconds:.0f} s")


def add_parser(commands) -> None:
    parser = commands.add_parser("health", help="exit 0 when the gRPC service at ADDR is SERVING")
    parser.add_argument("address", help="host:port of a service's gRPC listener")
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.set_defaults(handler=_run_probe)


def _run_probe(args) -> int:
    serving = asyncio.run(is_serving(args.address, timeout=args.timeout))
    print("SERVING" if serving else "NOT_SERVING")
    return 0 if serving else 1
