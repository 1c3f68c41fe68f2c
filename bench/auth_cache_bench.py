"""Authentication with and without the edge's cache (issue 5), through the real edge.

The stack runs as in bench/overhead.py (four processes, SQLite, zero-latency
upstream) twice: once with the default QUANTIZED_EDGE_AUTH_CACHE_TTL_SECONDS and
once with 0, so every request sends billing an Authenticate call. Both runs time
the same generation requests, one client at a time and 32 at once; the difference
is what authentication costs a request when it is not cached.

Run: .venv/bin/python bench/auth_cache_bench.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from http_load import build_request, run_load  # noqa: E402
from overhead import ROOT, cpu_seconds, create_account, free_port, start_stack  # noqa: E402

BODY = json.dumps({"model": "gpt-image-1", "prompt": "a small hedgehog", "quality": "low"}).encode()


async def _measure(ports: dict[str, int], api_key: str, processes: dict, total: int) -> dict:
    request = build_request("127.0.0.1", ports["http"], "/v1/images/generations", BODY,
                            {"Authorization": f"Bearer {api_key}"})
    await run_load("127.0.0.1", ports["http"], request, 4, 50)
    report = {}
    for clients in (1, 32):
        per_client = max(1, (total // 3 if clients == 1 else total) // clients)
        before = {name: cpu_seconds(process.pid) for name, process in processes.items()}
        result = await run_load("127.0.0.1", ports["http"], request, clients, per_client)
        served = max(1, len(result.latencies_ms))
        cpu = {name: round((cpu_seconds(p.pid) - before[name]) * 1000 / served, 3)
               for name, p in processes.items()}
        report[f"{clients}_clients"] = {
            "p50_ms": round(result.percentile(0.5), 3), "p99_ms": round(result.percentile(0.99), 3),
            "rps": round(result.throughput, 1), "errors": result.errors,
            "cpu_ms_per_request": cpu, "cpu_ms_per_request_total": round(sum(cpu.values()), 3)}
    return report


def _run(upstream_port: int, extra_env: dict[str, str], total: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        processes, ports, admin_token = start_stack(Path(tmp), upstream_port, extra_env)
        try:
            api_key = asyncio.run(create_account(ports["billing"], admin_token, unlimited=True))
            return asyncio.run(_measure(ports, api_key, processes, total))
        finally:
            for process in processes.values():
                process.terminate()
            for process in processes.values():
                process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="requests in the 32-client run")
    args = parser.parse_args()
    upstream_port = free_port()
    upstream = subprocess.Popen([sys.executable, str(ROOT / "bench" / "zero_latency_openai.py"), str(upstream_port)],
                                stdout=subprocess.PIPE, text=True)
    assert upstream.stdout.readline().strip() == "ready"
    try:
        report = {
            "cached (default TTL)": _run(upstream_port, {}, args.requests),
            "not cached (TTL 0)": _run(upstream_port, {"QUANTIZED_EDGE_AUTH_CACHE_TTL_SECONDS": "0"}, args.requests),
            "load_average_1m": os.getloadavg()[0],
        }
    finally:
        upstream.terminate()
        upstream.wait(10)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
