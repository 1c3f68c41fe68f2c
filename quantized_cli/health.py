"""Waiting for a gRPC service to report SERVING on the standard health service.

An internal service runs mutual TLS: the probe then presents a certificate of the
CA (any identity may call Health) and checks it reached the service it names."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from quantized_runtime.channels import open_channel
from quantized_runtime.tls import TlsFiles, tls_files_from_environment


async def is_serving(address: str, timeout: float = 1.0, tls: TlsFiles | None = None,
                     service: str | None = None) -> bool:
    async with open_channel(address, tls=tls, peer=service) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING


async def wait_until_serving(address: str, deadline_seconds: float,
                             still_running: Callable[[], bool], tls: TlsFiles | None = None,
                             service: str | None = None) -> None:
    """Poll until SERVING; fail early if the process behind it has exited."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline_seconds
    while loop.time() < give_up:
        if not still_running():
            raise RuntimeError(f"the service at {address} exited before it became healthy")
        if await is_serving(address, tls=tls, service=service):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the service at {address} was not healthy within {deadline_seconds:.0f} s")


def add_parser(commands) -> None:
    parser = commands.add_parser("health", help="exit 0 when the gRPC service at ADDR is SERVING")
    parser.add_argument("address", help="host:port of a service's gRPC listener")
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--service", default=None, choices=("catalog", "billing", "provider"),
                        help="probe this internal service over mutual TLS, with the certificate "
                             "in QUANTIZED_TLS_CERT_FILE/_KEY_FILE/_CA_FILE")
    parser.set_defaults(handler=_run_probe)


def _run_probe(args) -> int:
    tls = tls_files_from_environment() if args.service else None
    if args.service and tls is None:
        print("quantized health: --service needs QUANTIZED_TLS_CERT_FILE, QUANTIZED_TLS_KEY_FILE "
              "and QUANTIZED_TLS_CA_FILE", file=sys.stderr)
        return 2
    serving = asyncio.run(is_serving(args.address, timeout=args.timeout, tls=tls, service=args.service))
    print("SERVING" if serving else "NOT_SERVING")
    return 0 if serving else 1
