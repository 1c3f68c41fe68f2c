"""Benchmark: the catalog's request-path calls (not collected by pytest).

Run: .venv/bin/python bench/catalog_bench.py [CALLS]
Starts a real catalog server on 127.0.0.1 (SQLite in a temporary directory) and
times, sequentially: the in-process snapshot resolution, then ResolveRoute
and QuotePrice over gRPC. Results go to docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from quantized_runtime.grpc_engine import prefer_polling_engine

# Clients and servers here run gRPC core's engine as the services do (before grpc loads).
prefer_polling_engine()

from quantized.catalog.v1 import catalog_pb2, catalog_pb2_grpc  # noqa: E402
from quantized.common.v1 import images_pb2  # noqa: E402
from quantized_runtime.channels import open_channel  # noqa: E402
from quantized_runtime.defaults import sqlite_url  # noqa: E402
from quantized_runtime.features import IMAGE_GENERATION  # noqa: E402

from catalog_svc.main import start  # noqa: E402
from catalog_svc.settings import BUNDLED_CATALOG_FILE, CatalogSettings  # noqa: E402


def _report(name: str, samples_ms: list[float]) -> None:
    ordered = sorted(samples_ms)
    p99 = ordered[int(len(ordered) * 0.99) - 1]
    print(f"{name:<28} n={len(ordered):<6} mean={statistics.fmean(ordered):.3f} ms  "
          f"p50={statistics.median(ordered):.3f} ms  p99={p99:.3f} ms")


async def _time_rpc(method, request, calls: int) -> list[float]:
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        await method(request, timeout=10)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def main(calls: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = CatalogSettings(listen="127.0.0.1:0", database_url=sqlite_url(tmp, "catalog.db"),
                                   file=BUNDLED_CATALOG_FILE, admin_token="bench-admin-token-0123456789abcdef", data_dir=Path(tmp))
        running = await start(settings)
        channel = open_channel(f"127.0.0.1:{running.port}")
        try:
            resolve_samples = []
            for _ in range(calls):
                started = time.perf_counter()
                running.core.resolve("gpt-image-1", "", IMAGE_GENERATION)
                resolve_samples.append((time.perf_counter() - started) * 1000)
            _report("snapshot resolve (in-proc)", resolve_samples)
            stub = catalog_pb2_grpc.CatalogServiceStub(channel)
            await _time_rpc(stub.ResolveRoute, catalog_pb2.ResolveRouteRequest(model="gpt-image-1"), 100)
            _report("ResolveRoute (gRPC)", await _time_rpc(
                stub.ResolveRoute, catalog_pb2.ResolveRouteRequest(model="gpt-image-1"), calls))
            _report("QuotePrice (gRPC)", await _time_rpc(stub.QuotePrice, catalog_pb2.QuotePriceRequest(
                model_id="gpt-image-1", size="1024x1024", quality=images_pb2.QUALITY_HIGH, n=1), calls))
        finally:
            await channel.close()
            await running.stop(0)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000))
