"""Run the edge: uvicorn (HTTP) and the grpc.aio ImagesService in one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import uvicorn
from prometheus_client import REGISTRY

from quantized_runtime.event_loop import run_service
from quantized_runtime.health import DependencyWatch, serve_health_by_dependencies
from quantized_runtime.logging import configure_logging
from quantized_runtime.metrics import metrics_served
from quantized_runtime.server import RunningServer, create_server, wait_for_shutdown_signal
from quantized_runtime.settings import load_settings
from quantized_runtime.tracing import tracing_session

from edge.flow import ImagesFlow
from edge.http_app import create_app
from edge.idempotency import REPLAY_RETENTION_SECONDS, Idempotency
from edge.idempotency_stores import BillingIdempotencyStore, RedisIdempotencyStore
from edge.leases import CreditLeases, LeaseSettings
from edge.metrics import LeaseAdmissionCollector
from edge.peers import Peers
from edge.rate_limits import RateLimiter, open_rate_limiter, redis_client
from edge.readiness import PEERS_THE_EDGE_NEEDS, peer_watch
from edge.servicer import SERVICE_NAMES, registrars
from edge.settings import EdgeSettings
from edge.validation import RequestValidator

log = logging.getLogger("quantized.edge")


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
    leases: CreditLeases
    _readiness: DependencyWatch
    limiter: RateLimiter
    _idempotency: Idempotency

    async def stop(self, grace_seconds: float) -> None:
        """Stop accepting, let in-flight requests finish within the grace period,
        see every charge answered and every lease returned, close channels."""
        await self._readiness.stop()
        self._http.should_exit = True
        await asyncio.gather(self._grpc.stop(grace_seconds), self._wait_http(grace_seconds))
        await self._idempotency.close()
        await self.leases.close(grace_seconds)
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
    # proto says TCP, and without it each response pays a delayed-ACK stall.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def start(settings: EdgeSettings) -> RunningEdge:
    """Open the peer channels on the running loop, then serve HTTP, then gRPC.

    gRPC comes last because its health service turning SERVING is what tells
    the dev stack and orchestrators that the whole edge is ready, once the
    readiness watch (edge/readiness.py) has reached billing and provider_svc;
    from then on it turns NOT_SERVING while one of them is down for longer than
    the grace period.
    """
    peers = Peers.open(settings.catalog_addr, settings.billing_addr, settings.provider_addr,
                       settings.max_message_bytes, settings.tls_files())
    leases = CreditLeases(peers.ledger, LeaseSettings(
        enabled=settings.credit_leases, min_quotes=settings.lease_min_quotes,
        target_seconds=settings.lease_target_seconds, idle_seconds=settings.lease_idle_seconds,
        fallback_seconds=settings.lease_fallback_seconds,
        call_timeout_seconds=settings.internal_rpc_timeout_seconds,
        capped_key_memory_seconds=settings.auth_cache_ttl_seconds))
    redis_url = settings.redis_url.get_secret_value() if settings.redis_url else None
    idempotency_store = (
        RedisIdempotencyStore(redis_client(redis_url, settings.internal_rpc_timeout_seconds)) if redis_url
        else BillingIdempotencyStore(peers.billing))
    idempotency = Idempotency(
        idempotency_store, settings.idempotency_max_stored_bytes,
        # A claim outlives its request; an edge that dies mid-request frees the key after it.
        running_seconds=min(REPLAY_RETENTION_SECONDS,
                            int(settings.request_timeout_seconds + 2 * settings.internal_rpc_timeout_seconds) + 1),
        call_timeout_seconds=settings.internal_rpc_timeout_seconds)
    flow = ImagesFlow(peers, leases, settings, idempotency)
    limiter = open_rate_limiter(
        redis_url, settings.redis_unavailable_policy, settings.redis_timeout_seconds, settings.redis_retry_seconds,
        # A request never outlives its budget; a dead edge's in-flight slots free after it.
        in_flight_ttl_seconds=settings.request_timeout_seconds + 60)
    validator = RequestValidator()
    readiness = peer_watch(peers, settings.peer_down_grace_seconds)
    try:
        sock = _bind(settings.host, settings.port)
    except BaseException:
        await peers.close()
        raise
    http = _EmbeddedUvicorn(uvicorn.Config(
        create_app(flow, validator, settings.max_body_bytes, limiter, readiness),
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
        grpc_server = await create_server(
            settings.listen,
            registrars(flow, validator, limiter),
            SERVICE_NAMES,
            settings.max_message_bytes,
            mint_request_ids=True,
            # Callers present API keys, as on HTTP; what they may send is capped as on HTTP.
            public=True,
            max_receive_message_bytes=settings.max_body_bytes,
            reflection_enabled=settings.reflection,
            # ImagesServicer writes the edge's one line per request (edge/metrics.py).
            log_calls=False,
        )
    except BaseException:
        http.should_exit = True
        await asyncio.gather(http_task, return_exceptions=True)
        sock.close()
        await peers.close()
        raise
    follow_peers = serve_health_by_dependencies(
        grpc_server.health, {name: PEERS_THE_EDGE_NEEDS for name in ("", *SERVICE_NAMES)})
    await follow_peers(readiness.down)
    readiness.on_change(follow_peers)
    readiness.start()
    return RunningEdge(sock.getsockname()[1], grpc_server.port, http, http_task, grpc_server, peers,
                       leases, readiness, limiter, idempotency)


async def _serve(settings: EdgeSettings) -> None:
    with metrics_served(settings.metrics_listen, "edge"):
        running = await start(settings)
        REGISTRY.register(LeaseAdmissionCollector(running.leases))
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
    with tracing_session("quantized-edge", settings):
        run_service(_serve(settings))


if __name__ == "__main__":
    main()
