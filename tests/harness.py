"""Serving a real service in a test: start it on a free loopback port (its
settings say port 0), open one channel to it with the runtime's options, and
close both however the test ends. Every test package starts its servers
through `serving`, so a server under test is set up and torn down one way."""

from __future__ import annotations

import contextlib
import operator
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import grpc

from quantized_runtime.channels import open_channel
from quantized_runtime.tls import TlsFiles


class Stoppable(Protocol):
    async def stop(self, grace_seconds: float) -> None: ...


RunningT = TypeVar("RunningT", bound=Stoppable)


@dataclass
class Served(Generic[RunningT]):
    running: RunningT
    channel: grpc.aio.Channel


@contextlib.asynccontextmanager
async def serving(starting: Awaitable[RunningT], *,
                  port: Callable[[RunningT], int] = operator.attrgetter("port"),
                  stop_grace_seconds: float = 0, tls: TlsFiles | None = None,
                  peer: str | None = None) -> AsyncIterator[Served[RunningT]]:
    """`starting`'s server and a channel to its gRPC `port` (over mutual TLS with
    `tls`, expecting the service `peer`); on exit the channel closes, then the
    server stops within `stop_grace_seconds`."""
    running = await starting
    channel = open_channel(f"127.0.0.1:{port(running)}", tls=tls, peer=peer)
    try:
        yield Served(running, channel)
    finally:
        await channel.close()
        await running.stop(stop_grace_seconds)
