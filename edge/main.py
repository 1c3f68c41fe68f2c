"""Run the edge: uvicorn (HTTP) and the grpc.aio ImagesService in one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import uvicorn

from quantized.images.v1 import images_pb2, images_pb2_grpc
from quantized_runtime.event_loop import run_service
from quantized_runtime.logging import configure_logging
from quantized_runtime.server import RunningServer, create_server, wait_for_shutdown_signal
from quantized_runtime.settings import load_settings

from edge.flow import ImagesFlow
from edge.http_app import create_app
from edge.peers import Peers
from edge.rate_limits import RateLimiter, open_rate_limiter
from edge.servicer import ImagesServicer
from edge.settings import EdgeSettings
from edge.validation import RequestValidator

log = logging.getLogger("quantized.edge")

IMAGES_SERVICE_NAME = images_pb2.DESCRIPTOR.services_by_name["ImagesService"].full_name


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the edge decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class RunningEdge:
    http_port: int
    grpc_port: int
    _http: _EmbeddedUvicorn
    _http_task: asyncio.Task[None]
    _grpc: RunningServer
    _peers: Peers
    limiter: RateLimiter

    async def stop(self, grace_seconds: float) -> None:
        """Stop accepting, let in-flight requests finish within the grace period, close channels."""
        self._http.should_exit = True
        await asyncio.gather(self._grpc.stop(grace_seconds), self._wait_http(grace_seconds))
        await self._peers.close()
        await self.limiter.close()

    async def _wait_http(self, grace_seconds: float) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(self._http_task), grace_seconds + 1)
        except TimeoutError:
            self._http.force_exit = True
            await self._http_task


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on accepted sockets whose
    # proto says TCP, and without it each response pays a delayed-ACK stall (~40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def start(settings: EdgeSettings) -> RunningEdge:
    """Open the peer channels on the running loop, then serve HTTP, then gRPC.

    gRPC comes last because its health service turning SERVING is what tells
    the dev stack and orchestrators that the whole edge is ready.
    """
    peers = Peers.open(settings.catalog_addr, settings.billing_addr, settings.provider_addr,
                       settings.max_message_bytes)
    flow = ImagesFlow(peers, settings)
    limiter = open_rate_limiter(
        settings.redis_url.get_secret_value() if settings.redis_url else None,
        settings.redis_unavailable_policy, settings.redis_timeout_seconds, settings.redis_retry_seconds,
        # A request never outlives its budget; a dead edge's in-flight slots free after it.
        in_flight_ttl_seconds=settings.request_timeout_seconds + 60)
    validator = RequestValidator()
    try:
        sock = _bind(settings.host, settings.port)
    except BaseException:
        await peers.close()
        raise
    http = _EmbeddedUvicorn(uvicorn.Config(
        create_app(flow, validator, settings.max_body_bytes, limiter),
        # No lifespan, access log or proxy-header rewriting: the edge logs its own line per
        # request, and the client address it limits failed authentications by is the
        # socket's (a forwarded-for header is the client's to forge).
        lifespan="off", access_log=False, proxy_headers=False, log_config=None, server_header=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) or 1,
    ))
    http_task = asyncio.get_running_loop().create_task(http.serve(sockets=[sock]))
    try:
        while not http.started:
            if http_task.done():
                http_task.result()
                raise RuntimeError("the HTTP server stopped during start-up")
            await asyncio.sleep(0.005)
        servicer = ImagesServicer(flow, validator, limiter)
        grpc_server = await create_server(
            settings.listen,
            [lambda server: images_pb2_grpc.add_ImagesServiceServicer_to_server(servicer, server)],
            [IMAGES_SERVICE_NAME],
            settings.max_message_bytes,
            mint_request_ids=True,
        )
    except BaseException:
        http.should_exit = True
        await asyncio.gather(http_task, return_exceptions=True)
        sock.close()
        await peers.close()
        raise
    return RunningEdge(sock.getsockname()[1], grpc_server.port, http, http_task, grpc_server, peers, limiter)


async def _serve(settings: EdgeSettings) -> None:
    running = await start(settings)
    log.info("edge listening", extra={"fields": {
        "http_port": running.http_port, "grpc_port": running.grpc_port,
        "event_loop": type(asyncio.get_running_loop()).__module__.split(".", 1)[0]}})
    await wait_for_shutdown_signal()
    log.info("edge stopping", extra={"fields": {"grace_seconds": settings.shutdown_grace_seconds}})
    await running.stop(settings.shutdown_grace_seconds)
    log.info("edge stopped")


def main() -> None:
    settings = load_settings(EdgeSettings)
    configure_logging(settings.log_level)
    run_service(_serve(settings))


if __name__ == "__main__":
    main()
