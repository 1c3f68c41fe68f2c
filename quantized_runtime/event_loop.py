"""Run a service's main coroutine on uvloop when it is installed (uvicorn[standard]
brings it on Linux and macOS), else on asyncio's own loop: uvloop spends less CPU
per call for the edge and the catalog (figures: docs/benchmarks.md)."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Coroutine
from typing import Any


def run_service(main_coroutine: Coroutine[Any, Any, None]) -> None:
    if importlib.util.find_spec("uvloop") is not None:
        import uvloop

        uvloop.run(main_coroutine)
    else:
        asyncio.run(main_coroutine)
