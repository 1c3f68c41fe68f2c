"""A small keep-alive HTTP/1.1 load generator on raw asyncio streams.

httpx spends about a millisecond of CPU per request, which on a 2-core machine would
measure the load generator rather than the router; this spends a few microseconds.
It understands exactly what the benchmarks need: Content-Length responses.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    @property
    def throughput(self) -> float:
        return len(self.latencies_ms) / self.elapsed_s if self.elapsed_s else 0.0


def build_request(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
             f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return status, await reader.readexactly(length)


async def _worker(host: str, port: int, request: bytes, count: int, result: LoadResult) -> None:
    reader, writer = await asyncio.open_connection(host, port, limit=256 * 1024 * 1024)
    try:
        for _ in range(count):
            started = time.perf_counter()
            writer.write(request)
            status, _body = await _read_response(reader)
            result.latencies_ms.append((time.perf_counter() - started) * 1000)
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if status != 200:
                result.errors += 1
    finally:
        writer.close()


async def run_load(host: str, port: int, request: bytes, concurrency: int, requests_per_client: int) -> LoadResult:
    result = LoadResult()
    started = time.perf_counter()
    await asyncio.gather(*(_worker(host, port, request, requests_per_client, result)
                           for _ in range(concurrency)))
    result.elapsed_s = time.perf_counter() - started
    return result


async def one_request(host: str, port: int, request: bytes) -> tuple[int, bytes, float]:
    reader, writer = await asyncio.open_connection(host, port, limit=256 * 1024 * 1024)
    try:
        started = time.perf_counter()
        writer.write(request)
        status, body = await _read_response(reader)
        return status, body, (time.perf_counter() - started) * 1000
    finally:
        writer.close()
