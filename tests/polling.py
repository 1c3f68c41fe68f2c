"""Waiting in tests for something another task or process does."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def eventually(condition: Callable[[], bool]) -> None:
    """Poll `condition` for up to ten seconds; fail on its last answer."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    assert condition()
