"""Waiting in tests for something another task or process does."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def eventually(condition: Callable[[], bool]) -> None:
    """Poll `condition` for up to ten seconds; fail on its last answer."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    assert condition()


async def eventually_true(check: Callable[[], Awaitable[bool]], seconds: float = 10.0) -> None:
    """Await `check` every 50 ms for up to `seconds`; fail on its last answer."""
    for _ in range(int(seconds / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    assert await check()
