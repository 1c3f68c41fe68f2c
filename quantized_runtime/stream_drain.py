"""Clean ends for long-lived request streams when their server stops.

A grpc.aio server's stop waits for every open call, and a caller's long-lived
stream (Ledger, GenerateStream) never ends by itself, so without this the server
would wait its whole grace period and then cut the stream, and the calls in
flight on it. Once `drain()` is called (the runtime's `RunningServer.stop` calls
it), each stream served `announcing(...)` sends its caller a draining message;
the caller sends nothing more on that stream and closes its side, and the
handler, which reads on until then, answers what it read and ends the stream OK.

The server never ends a stream on its own while the caller may still be
writing: with grpc.aio a write that races the end of its call fails, and the
call's status is then INTERNAL instead of the server's (grpc/grpc#36066), so
the caller could not tell an unread request from a lost one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

log = logging.getLogger("quantized.stream_drain")


class StreamDrain:
    def __init__(self) -> None:
        self._draining = asyncio.Event()

    def drain(self) -> None:
        self._draining.set()

    @contextlib.asynccontextmanager
    async def announcing(self, announce: Callable[[], Awaitable[None]]) -> AsyncIterator[None]:
        """While a stream is served: once the server drains, `announce()` writes
        the stream's draining message, once."""
        announcer = asyncio.ensure_future(self._announce_when_draining(announce))
        try:
            yield
        finally:
            announcer.cancel()

    async def _announce_when_draining(self, announce: Callable[[], Awaitable[None]]) -> None:
        await self._draining.wait()
        try:
            await announce()
        except Exception:  # noqa: BLE001 - the stream ended meanwhile: no one is left to tell
            log.debug("could not announce the drain on a stream that ended", exc_info=True)
