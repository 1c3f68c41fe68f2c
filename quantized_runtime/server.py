"""gRPC server bootstrap: mutual TLS and authorization, health, reflection,
interceptors and graceful shutdown.

`create_server` builds and starts a server (tests bind port 0); `serve_until_signal`
runs it until SIGTERM/SIGINT, then turns health NOT_SERVING, drains its long-lived
streams (quantized_runtime.stream_drain) and lets in-flight calls finish within the
grace period.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from quantized_runtime.authorization import AuthorizationInterceptor
from quantized_runtime.channels import is_loopback, server_options
from quantized_runtime.interceptors import ErrorAndLoggingInterceptor
from quantized_runtime.tls import TlsFiles, server_credentials

log = logging.getLogger("quantized.server")

Registrar = Callable[[grpc.aio.Server], None]


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service_names: tuple[str, ...]
    # Called once the server takes no new calls, to end the open streams (StreamDrain.drain).
    drainers: tuple[Callable[[], None], ...] = ()
    # The per-method check of a mutual-TLS server (its refusal counter); None in plaintext.
    authorization: AuthorizationInterceptor | None = None
    # The plaintext port that serves only health checks, when asked for one.
    health_port: int | None = None

    async def stop(self, grace_seconds: float | None) -> None:
        # NOT_SERVING for good: a dependency watch can no longer turn it SERVING.
        await self.health.enter_graceful_shutdown()
        stopping = asyncio.ensure_future(self.server.stop(grace_seconds))
        # The stop's first step closes the listener and sends GOAWAY before it
        # yields. Drained only after that, a stream's caller told to send its next
        # requests on a new stream reaches another server, not this one.
        await asyncio.sleep(0)
        for drain in self.drainers:
            drain()
        await stopping


async def create_server(
    address: str,
    registrars: Iterable[Registrar],
    service_names: Iterable[str],
    max_message_bytes: int,
    mint_request_ids: bool = False,
    drainers: Iterable[Callable[[], None]] = (),
    *,
    tls: TlsFiles | None = None,
    public: bool = False,
    reflection_enabled: bool = False,
    max_receive_message_bytes: int | None = None,
    health_address: str | None = None,
    log_calls: bool = True,
) -> RunningServer:
    """Build, bind and start a server; health turns SERVING only once it has started.
    `drainers` end the server's long-lived streams when it stops.

    With `tls` the server requires a client certificate from its CA and checks each
    call against quantized_runtime.authorization; without, it listens in plaintext
    (tests, benchmarks) and warns when the address is reachable from other hosts,
    unless it is `public`: a server whose callers authenticate themselves in each
    call (the edge's ImagesService, with API keys) rather than with certificates.
    `max_receive_message_bytes` caps what callers may send (default: `max_message_bytes`).
    `health_address` adds a plaintext port for probes that cannot present a
    certificate: on it every call but a health check is refused for want of an
    identity (quantized_runtime.authorization). Without `log_calls` the
    handlers write their own log line per call (the edge's ImagesService)."""
    authorization = AuthorizationInterceptor() if tls is not None else None
    interceptors: list[grpc.aio.ServerInterceptor] = [ErrorAndLoggingInterceptor(mint_request_ids, log_calls)]
    if authorization is not None:
        # First in the chain: a refused call reaches no other interceptor and no handler.
        interceptors.insert(0, authorization)
    server = grpc.aio.server(
        interceptors=interceptors,
        options=server_options(max_message_bytes, max_receive_message_bytes),
    )
    for register in registrars:
        register(server)
    names = tuple(service_names)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if reflection_enabled:
        reflection.enable_server_reflection(
            (*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            server,
        )
    if tls is not None:
        port = server.add_secure_port(address, server_credentials(tls))
    else:
        port = server.add_insecure_port(address)
        if not public and not is_loopback(address):
            log.warning("listening without mutual TLS on a non-loopback address: any host that "
                        "reaches it can call every method; set QUANTIZED_TLS_CERT_FILE, "
                        "QUANTIZED_TLS_KEY_FILE and QUANTIZED_TLS_CA_FILE",
                        extra={"fields": {"address": address}})
    if port == 0:
        raise RuntimeError(f"could not bind gRPC server to {address}")
    health_port = server.add_insecure_port(health_address) if health_address is not None else None
    if health_port == 0:
        raise RuntimeError(f"could not bind the health port to {health_address}")
    for name in ("", *names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.start()
    for name in ("", *names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server, port, health_servicer, names, tuple(drainers), authorization, health_port)


async def wait_for_shutdown_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def serve_until_signal(
    running: RunningServer,
    grace_seconds: float,
    on_stop: Callable[[], Awaitable[None]] | None = None,
    name: str = "service",
) -> None:
    log.info("%s listening", name, extra={"fields": {"port": running.port}})
    await wait_for_shutdown_signal()
    log.info("%s stopping", name, extra={"fields": {"grace_seconds": grace_seconds}})
    await running.stop(grace_seconds)
    if on_stop is not None:
        await on_stop()
    log.info("%s stopped", name)
