"""Clean ends for long-lived request streams when their server stops.

A grpc.aio server's stop waits for every open call, and a caller's long-lived
stream (Ledger, GenerateStream) never ends by itself, so without this the server
would wait its whole grace period and then cut the stream, and the calls in
flight on it. A stream handler reads its requests through `StreamDrain.requests`;
once `drain()` is called (the runtime's `RunningServer.stop` calls it), each
handler reads no further request, answers what it read, and returns: the stream
ends with status OK, and a request still unanswered then was never read, so its
caller may send it again on a new stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, TypeVar

Request = TypeVar("Request")


class StreamDrain:
    def __init__(self) -> None:
        self._draining = False
        # Each stream's pending read: a task of its own, so that drain() can stop it.
        self._reads: set[asyncio.Future[Any]] = set()

    def drain(self) -> None:
        """Cancelling a pending grpc.aio read is safe: its completion is then
        ignored, and a message it receives later is dropped unread. No read
        may follow it, and none does."""
        self._draining = True
        for read in self._reads:
            read.cancel()

    async def requests(self, requests: AsyncIterator[Request]) -> AsyncIterator[Request]:
        """The stream's requests until the caller closes its side or the server drains."""
        while not self._draining:
            read = asyncio.ensure_future(anext(requests, None))
            self._reads.add(read)
            try:
                request = await read
            except asyncio.CancelledError:
                handler = asyncio.current_task()
                # Stopped by drain(), not cancelled with the handler: the stream ends.
                if self._draining and handler is not None and not handler.cancelling():
                    return
                raise
            finally:
                self._reads.discard(read)
            if request is None:
                return
            yield request
