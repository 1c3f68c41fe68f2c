"""provider_svc benchmark (not a test): overhead per call and a 30 MB image.

Method
- A zero-latency upstream: a raw asyncio HTTP/1.1 server in its own process that
  answers every POST with a canned OpenAI Images body (a 1 KB PNG, or a 30 MB PNG
  when the prompt is "big"). No parsing beyond Content-Length, keep-alive on.
- provider_svc in its own process (`python -m provider_svc.main`), pointed at it.
- The bench process is the gRPC client. It measures, sequentially:
  direct  - the same POST straight to the upstream with aiohttp (the floor);
  via     - a call on ProviderService.GenerateStream through provider_svc, with
            the edge's client (one extra gRPC hop);
  interleaved call by call, and reports overhead = via - direct (per pair) at
  p50/p99, provider_svc CPU per call
  (from /proc/<pid>/stat), CPU per call at 32 concurrent callers, and for the
  30 MB image: latency and provider_svc peak RSS above its resting RSS
  (VmHWM after resetting it with /proc/<pid>/clear_refs). The load average is
  printed too: on a shared 2-core machine the figures move with it.
- `--client-cpu` compares upstream HTTP clients in-process (CPU per call at 32
  concurrent callers); `--profile` runs pyinstrument over the OpenAI adapter;
  `--grpc-floor` times the gRPC hop alone (a GenerateStream with canned answers,
  same runtime, same client).

Run: .venv/bin/python bench/provider_bench.py [--calls 2000] [--client-cpu | --profile | --grpc-floor]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "gen")]

from quantized_runtime.grpc_engine import prefer_polling_engine  # noqa: E402

# Clients and servers here run gRPC core's engine as the services do (before grpc loads).
prefer_polling_engine()

import grpc  # noqa: E402
import httpx  # noqa: E402

from quantized.common.v1 import images_pb2  # noqa: E402
from quantized.provider.v1 import provider_pb2, provider_pb2_grpc  # noqa: E402
from edge.generate_client import GenerateClient  # noqa: E402
from quantized_runtime.call_stream import CallStreamServer  # noqa: E402
from quantized_runtime.channels import open_channel  # noqa: E402
from quantized_runtime.stream_drain import StreamDrain  # noqa: E402

BIG_TARGET_BYTES = 30 * 1024 * 1024
API_KEY = "sk-bench"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- upstream

def _png(side: int, random_pixels: bool) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    if random_pixels:
        Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buffer, "PNG", compress_level=0)
    else:
        Image.new("RGB", (side, side), (1, 2, 3)).save(buffer, "PNG")
    return buffer.getvalue()


def _canned(image: bytes) -> bytes:
    body = json.dumps({"created": 1776443191, "data": [{"b64_json": base64.b64encode(image).decode()}],
                       "usage": {"input_tokens": 10, "output_tokens": 20, "total_tokens": 30}}).encode()
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


class _Upstream(asyncio.Protocol):
    small: bytes = b""
    big: bytes = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].lower()
            length = 0
            marker = head.find(b"content-length:")
            if marker >= 0:
                length = int(head[marker + 15:].split(b"\r\n", 1)[0])
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            body = self.buffer[head_end + 4:end]
            self.buffer = self.buffer[end:]
            self.transport.write(self.big if b'"prompt": "big"' in body else self.small)  # type: ignore[attr-defined]


def _serve_upstream(port_out: multiprocessing.Queue) -> None:
    _Upstream.small = _canned(_png(16, random_pixels=False))
    _Upstream.big = _canned(_png(int((BIG_TARGET_BYTES / 3) ** 0.5) + 1, random_pixels=True))

    async def run() -> None:
        server = await asyncio.get_running_loop().create_server(_Upstream, "127.0.0.1", 0)
        port_out.put(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(run())


def start_upstream() -> tuple[multiprocessing.Process, int]:
    queue: multiprocessing.Queue = multiprocessing.Queue()
    process = multiprocessing.Process(target=_serve_upstream, args=(queue,), daemon=True)
    process.start()
    return process, queue.get(timeout=60)


# ---------------------------------------------------------------- provider_svc process

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_provider(upstream_port: int) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'gen'}", "QUANTIZED_PROVIDER_LISTEN": f"127.0.0.1:{port}",
           "QUANTIZED_PROVIDER_METRICS_LISTEN": "127.0.0.1:0",
           "OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": f"http://127.0.0.1:{upstream_port}/v1",
           "QUANTIZED_PROVIDER_LOG_LEVEL": "WARNING"}
    process = subprocess.Popen([sys.executable, "-m", "provider_svc.main"], env=env, cwd=ROOT)
    return process, port


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * fraction), len(ordered) - 1)]


# ---------------------------------------------------------------- measurements

def _request(prompt: str) -> provider_pb2.GenerateRequest:
    """gpt-image-1 as the edge dispatches it: the adapter and constraints of its catalog route."""
    from catalog_svc.catalog_file import load_catalog_file
    from catalog_svc.servicer import constraints_message
    from catalog_svc.settings import BUNDLED_CATALOG_FILE

    [model] = [model for model in load_catalog_file(BUNDLED_CATALOG_FILE).models if model.id == "gpt-image-1"]
    return provider_pb2.GenerateRequest(
        provider="openai", model_id=model.id, upstream_model_id=model.id, adapter=model.routes[0].adapter,
        constraints=constraints_message(model.constraints),
        params=images_pb2.GenerationParams(prompt=prompt, n=1, size="1024x1024"),
        watermark=images_pb2.WATERMARK_C2PA)


async def measure(upstream_port: int, provider_pid: int, provider_port: int, calls: int) -> dict:
    """Each measurement through the edge's GenerateStream client."""
    channel = open_channel(f"127.0.0.1:{provider_port}")
    await channel.channel_ready()
    client = GenerateClient(provider_pb2_grpc.ProviderServiceStub(channel))
    try:
        return await _measure(upstream_port, provider_pid, client.generate, calls)
    finally:
        await client.close()
        await channel.close()


async def _measure(upstream_port: int, provider_pid: int,
                   generate: Callable[[provider_pb2.GenerateRequest, float], Awaitable[provider_pb2.GenerateResponse]],
                   calls: int) -> dict:
    import aiohttp

    results: dict = {}
    upstream_url = f"http://127.0.0.1:{upstream_port}/v1/images/generations"
    body = json.dumps({"model": "gpt-image-1", "prompt": "small", "n": 1, "size": "1024x1024"}).encode()
    small = _request("small")

    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_KEY}"}) as session:
        async def direct_call() -> None:
            # The same client stack provider_svc uses, so the difference is provider_svc itself.
            async with session.post(upstream_url, data=body) as response:
                await response.read()

        for _ in range(200):
            await direct_call()
            await generate(small, 10)
        direct, via = [], []
        provider_cpu = 0.0
        # Interleaved, so drifting machine load hits both series alike.
        for _ in range(calls):
            started = time.perf_counter()
            await direct_call()
            direct.append(time.perf_counter() - started)
            cpu_before = cpu_seconds(provider_pid)
            started = time.perf_counter()
            await generate(small, 10)
            via.append(time.perf_counter() - started)
            provider_cpu += cpu_seconds(provider_pid) - cpu_before
    overheads = [v - d for v, d in zip(via, direct, strict=True)]

    results["sequential"] = {
        "calls": calls,
        "direct_p50_ms": percentile(direct, 0.5) * 1e3, "direct_p99_ms": percentile(direct, 0.99) * 1e3,
        "via_p50_ms": percentile(via, 0.5) * 1e3, "via_p99_ms": percentile(via, 0.99) * 1e3,
        "overhead_p50_ms": percentile(overheads, 0.5) * 1e3,
        "overhead_p99_ms": percentile(overheads, 0.99) * 1e3,
        "provider_cpu_ms_per_call": provider_cpu / calls * 1e3,
    }

    concurrency = 32
    per_worker = max(calls // concurrency, 10)

    async def worker() -> None:
        for _ in range(per_worker):
            await generate(small, 30)

    cpu_before = cpu_seconds(provider_pid)
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    total = per_worker * concurrency
    results["concurrent_32"] = {
        "calls": total, "calls_per_second": total / elapsed,
        "provider_cpu_ms_per_call": (cpu_seconds(provider_pid) - cpu_before) / total * 1e3,
    }

    big = _request("big")
    reply = await generate(big, 60)
    image_bytes = len(reply.images[0].image_data)
    del reply
    big_latencies = []
    peaks = []
    for _ in range(5):
        resting = rss_kib(provider_pid, "VmRSS")
        reset_peak(provider_pid)
        started = time.perf_counter()
        reply = await generate(big, 60)
        big_latencies.append(time.perf_counter() - started)
        assert len(reply.images[0].image_data) == image_bytes
        del reply
        peaks.append((rss_kib(provider_pid, "VmHWM") - resting) * 1024)
    results["image_30mb"] = {
        "image_bytes": image_bytes,
        "latency_p50_ms": statistics.median(big_latencies) * 1e3,
        "latency_max_ms": max(big_latencies) * 1e3,
        "peak_extra_rss_bytes_median": statistics.median(peaks),
        "peak_extra_over_image_size": statistics.median(peaks) / image_bytes,
    }
    return results


# ---------------------------------------------------------------- upstream client comparison

async def client_cpu(upstream_port: int, calls: int) -> dict:
    """CPU per call of each candidate upstream client at 32 concurrent callers, in-process."""
    url = f"http://127.0.0.1:{upstream_port}/v1/images/generations"
    body = json.dumps({"model": "gpt-image-1", "prompt": "small"}).encode()
    candidates = {
        "httpx default pool": lambda: httpx.AsyncClient(),
        "httpx pool 100/100": lambda: httpx.AsyncClient(limits=httpx.Limits(max_connections=100,
                                                                              max_keepalive_connections=100)),
    }
    try:
        import httpx2

        candidates["httpx2 pool 100/100"] = lambda: httpx2.AsyncClient(
            limits=httpx2.Limits(max_connections=100, max_keepalive_connections=100))
    except ImportError:
        pass
    results = {}
    try:
        import aiohttp

        results["aiohttp pool 100"] = await _aiohttp_cpu(aiohttp, url, body, calls)
    except ImportError:
        pass
    for name, factory in candidates.items():
        client = factory()
        for _ in range(100):
            await client.post(url, content=body)

        async def worker(client=client) -> None:
            for _ in range(calls // 32):
                response = await client.post(url, content=body)
                response.json()

        cpu = time.process_time()
        await asyncio.gather(*(worker() for _ in range(32)))
        results[name] = (time.process_time() - cpu) / (calls // 32 * 32) * 1e3
        await client.aclose()
    results["provider_svc OpenAIAdapter.generate (aiohttp + body + parse)"] = await _adapter_cpu(upstream_port, calls)
    return {"cpu_ms_per_call_32_concurrent": results}


def _adapter_worker(upstream_port: int, calls: int) -> tuple[Any, Callable[[], Awaitable[None]]]:
    """The OpenAI adapter against the upstream, and a worker making calls // 32 small calls."""
    from provider_svc.adapters.openai import OpenAIAdapter
    from provider_svc.retry import RequestDeadline
    from provider_svc.servicer import to_domain
    from provider_svc.settings import ProviderSettings

    adapter = OpenAIAdapter(ProviderSettings(openai_api_key=API_KEY,
                                             openai_base_url=f"http://127.0.0.1:{upstream_port}/v1"))
    request = to_domain(_request("small"))

    async def worker() -> None:
        for _ in range(calls // 32):
            await adapter.generate(request, RequestDeadline(None, 30))

    return adapter, worker


async def _adapter_cpu(upstream_port: int, calls: int) -> float:
    adapter, worker = _adapter_worker(upstream_port, calls)
    await worker()
    cpu = time.process_time()
    await asyncio.gather(*(worker() for _ in range(32)))
    elapsed = time.process_time() - cpu
    await adapter.close()
    return elapsed / (calls // 32 * 32) * 1e3


async def _aiohttp_cpu(aiohttp: object, url: str, body: bytes, calls: int) -> float:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as session:  # type: ignore[attr-defined]
        async def one() -> None:
            async with session.post(url, data=body) as response:
                await response.json(content_type=None)

        for _ in range(100):
            await one()

        async def worker() -> None:
            for _ in range(calls // 32):
                await one()

        cpu = time.process_time()
        await asyncio.gather(*(worker() for _ in range(32)))
        return (time.process_time() - cpu) / (calls // 32 * 32) * 1e3


async def profile_adapter(upstream_port: int, calls: int) -> None:
    from pyinstrument import Profiler

    adapter, worker = _adapter_worker(upstream_port, calls)
    await worker()
    profiler = Profiler(async_mode="disabled")
    profiler.start()
    await asyncio.gather(*(worker() for _ in range(32)))
    profiler.stop()
    await adapter.close()
    print(profiler.output_text(unicode=False, color=False, show_all=os.environ.get("BENCH_PROFILE_ALL") == "1"))


class _CannedProvider(provider_pb2_grpc.ProviderServiceServicer):
    """GenerateStream answering every call at once with the same small response."""

    def __init__(self, drain: StreamDrain) -> None:
        self._drain = drain
        self._canned = provider_pb2.GenerateResponse(created=1)

    async def GenerateStream(self, request_iterator: AsyncIterator[provider_pb2.GenerateStreamRequest],
                             context: grpc.aio.ServicerContext) -> None:
        stream = CallStreamServer(context, self._drain, provider_pb2.GenerateStreamResponse(draining=True))

        async def answer(message: provider_pb2.GenerateStreamRequest) -> None:
            await stream.write(provider_pb2.GenerateStreamResponse(call_id=message.call_id, response=self._canned))

        async def on_message(message: provider_pb2.GenerateStreamRequest) -> None:
            stream.start(answer(message))

        await stream.serve(request_iterator, on_message)


async def grpc_floor(calls: int) -> dict:
    """The same hop with no upstream: a GenerateStream that answers a canned response,
    served by the shared runtime and called by the edge's client, in this process."""
    from quantized_runtime.server import create_server

    drain = StreamDrain()
    servicer = _CannedProvider(drain)
    running = await create_server(
        "127.0.0.1:0", [lambda server: provider_pb2_grpc.add_ProviderServiceServicer_to_server(servicer, server)],
        [], 128 * 1024 * 1024, drainers=[drain.drain])
    channel = open_channel(f"127.0.0.1:{running.port}")
    client = GenerateClient(provider_pb2_grpc.ProviderServiceStub(channel))
    small = _request("small")
    for _ in range(200):
        await client.generate(small, 10)
    latencies = []
    cpu = time.process_time()
    for _ in range(calls):
        started = time.perf_counter()
        await client.generate(small, 10)
        latencies.append(time.perf_counter() - started)
    cpu_per_call = (time.process_time() - cpu) / calls
    await client.close()
    await channel.close()
    await running.stop(0)
    return {"grpc_hop_p50_ms": percentile(latencies, 0.5) * 1e3, "grpc_hop_p99_ms": percentile(latencies, 0.99) * 1e3,
            "client_plus_server_cpu_ms_per_call": cpu_per_call * 1e3,
            "load_average_1m": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--client-cpu", action="store_true", help="compare upstream HTTP clients")
    parser.add_argument("--profile", action="store_true", help="pyinstrument the OpenAI adapter")
    parser.add_argument("--grpc-floor", action="store_true", help="the gRPC hop alone, canned response")
    args = parser.parse_args()
    if args.grpc_floor:
        print(json.dumps(asyncio.run(grpc_floor(args.calls)), indent=2))
        return

    upstream, upstream_port = start_upstream()
    try:
        if args.profile:
            asyncio.run(profile_adapter(upstream_port, args.calls))
            return
        if args.client_cpu:
            print(json.dumps(asyncio.run(client_cpu(upstream_port, args.calls)), indent=2))
            return
        provider, provider_port = start_provider(upstream_port)
        try:
            results = asyncio.run(measure(upstream_port, provider.pid, provider_port, args.calls))
        finally:
            provider.terminate()
            provider.wait(timeout=30)
        results["load_average_1m"] = os.getloadavg()[0]
        print(json.dumps(results, indent=2))
    finally:
        upstream.terminate()
        upstream.join(timeout=10)


if __name__ == "__main__":
    main()
