"""Several replicas of each service on this machine, as Kubernetes would run them:
2 edges, 2 billings, 2 provider_svcs and 1 catalog by default, each a `quantized
serve NAME` process, on the PostgreSQL database under test (billing) and the
in-process FakeOpenAI (money_stack.py's stack, with replicas).

Each edge reaches every replica of a backend through one peer address setting
listing them all (`QUANTIZED_BILLING_ADDR=127.0.0.1:P1,127.0.0.1:P2`), balanced
round robin by gRPC (quantized_runtime/channels.py). A replica can be SIGKILLed and
started again on its address, or replaced in place as docs/operations.md describes
(successor on the same address, its own "listening" line, then SIGTERM to the old).

Clients reach the edges through `EdgeBalancer`, the load balancer in front of them:
round robin over the edges it has, skipping one that refuses connections.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import httpx

from quantized_runtime.channels import grpc_target
from tests.e2e.money_stack import (STOP_TIMEOUT_SECONDS, Answer, Edge, MoneyStack, Service, free_port,
                                   post)
from tests.fake_upstreams import FakeOpenAI

# What each service logs once its own listener is up (quantized_runtime/server.py, edge/main.py).
LISTENING = {"catalog": "catalog listening", "billing": "billing listening",
             "provider": "provider_svc listening", "edge": "edge listening"}
DEFAULT_REPLICAS = {"catalog": 1, "billing": 2, "provider": 2}


class ReplicaStack(MoneyStack):
    def __init__(self, root: Path, billing_database_url: str, upstream: FakeOpenAI, *,
                 replicas: dict[str, int] | None = None, edges: int = 2, **options: float) -> None:
        super().__init__(root, billing_database_url, upstream, edges=edges, **options)
        counts = replicas or DEFAULT_REPLICAS
        self.replica_addresses = {name: [f"127.0.0.1:{free_port()}" for _ in range(count)]
                                  for name, count in counts.items()}
        # The peer address settings every edge reads: all replicas of the peer.
        self.addresses = {name: ",".join(addresses) for name, addresses in self.replica_addresses.items()}
        self.replicas: dict[str, list[Service]] = {}

    def _start(self, name: str) -> Service:
        """Every replica of `name`; MoneyStack.start waits for the first to serve."""
        self.replicas[name] = [self._start_replica(name, address) for address in self.replica_addresses[name]]
        return self.replicas[name][0]

    def _start_replica(self, name: str, address: str) -> Service:
        env = {**self._env(), f"QUANTIZED_{name.upper()}_LISTEN": address}
        process, log_path = self._spawn(name, env)
        service = Service(name, address, process, log_path)
        self.services.append(service)
        return service

    def _start_edge_at(self, grpc_address: str, http_port: int) -> Edge:
        env = {**self._env(), "QUANTIZED_EDGE_GRPC_LISTEN": grpc_address, "QUANTIZED_EDGE_PORT": str(http_port)}
        process, log_path = self._spawn("edge", env)
        edge = Edge("edge", grpc_address, process, log_path, http_port)
        self.services.append(edge)
        return edge

    async def start(self) -> ReplicaStack:
        await super().start()
        await self._serving([replica for replicas in self.replicas.values() for replica in replicas])
        # The same list: replacing an edge in one replaces it in the other.
        self.replicas["edge"] = self.edges
        return self

    async def _admin(self, address: str, stub_type: Any, method: str, request: Any) -> Any:
        return await super()._admin(grpc_target(address), stub_type, method, request)

    def kill(self, name: str, index: int) -> None:
        """SIGKILL one replica, as a node failure or the OOM killer would."""
        replica = self.replicas[name][index]
        replica.process.send_signal(signal.SIGKILL)
        replica.process.wait(STOP_TIMEOUT_SECONDS)

    async def restart(self, name: str, index: int) -> None:
        """Start a dead replica again on its address (ports), and wait until it serves."""
        old = self.replicas[name][index]
        assert old.process.poll() is not None, f"{name} {index} is still running"
        if isinstance(old, Edge):
            successor: Service = self._start_edge_at(old.address, old.http_port)
        else:
            successor = self._start_replica(name, old.address)
        self.replicas[name][index] = successor
        await self._serving([successor])

    async def replace_in_place(self, name: str, index: int) -> int:
        """A backend's rolling upgrade step (docs/operations.md): the successor listens on
        the same address (SO_REUSEPORT), then the old process gets SIGTERM and drains.
        Returns the old process's exit code."""
        old = self.replicas[name][index]
        successor = self._start_replica(name, old.address)
        await self._logged(successor, f'"message": "{LISTENING[name]}"')
        self.replicas[name][index] = successor
        old.process.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(old.process.wait, STOP_TIMEOUT_SECONDS)

    async def replace_edge(self, index: int, balancers: list[EdgeBalancer], endpoint_removal_seconds: float) -> int:
        """An edge's rolling upgrade step, as a Deployment behind a Service does it: the
        successor (new ports: HTTP does not share its port) serves and joins the load
        balancer; the old one leaves it, and gets SIGTERM once its preStop pause is over."""
        old = self.edges[index]
        successor = self._start_edge_at(f"127.0.0.1:{free_port()}", free_port())
        await self._serving([successor])
        for balancer in balancers:
            balancer.add(successor)
            balancer.remove(old)
        await asyncio.sleep(endpoint_removal_seconds)
        old.process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(old.process.wait, STOP_TIMEOUT_SECONDS)
        self.edges[index] = successor
        return code


class EdgeBalancer:
    """The load balancer in front of the edges: each request goes to the next edge;
    an edge that refuses the connection (nothing was sent) is skipped for that request."""

    def __init__(self, edges: list[Edge], api_key: str, callers: int) -> None:
        self._api_key = api_key
        self._callers = callers
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._order: list[str] = []
        self._next = 0
        for edge in edges:
            self.add(edge)

    def add(self, edge: Edge) -> None:
        self._clients[edge.base_url] = httpx.AsyncClient(
            base_url=edge.base_url, timeout=60, headers={"Authorization": f"Bearer {self._api_key}"},
            limits=httpx.Limits(max_connections=self._callers, max_keepalive_connections=self._callers))
        self._order.append(edge.base_url)

    def remove(self, edge: Edge) -> None:
        self._order.remove(edge.base_url)

    async def post(self, request: dict) -> Answer | None:
        """The answer, or None when no edge took the request."""
        first = self._next
        self._next += 1
        for base_url in [self._order[(first + offset) % len(self._order)] for offset in range(len(self._order))]:
            answer = await post(self._clients[base_url], request)
            if answer is not None:
                return answer
        return None

    async def close(self) -> None:
        for client in self._clients.values():
            await client.aclose()
