"""Scale-out on one machine (issue 18): throughput through 1 edge versus 2 edges at
32 and 128 clients, the backends (catalog, billing, provider_svc) one process each,
against the zero-latency local OpenAI upstream.

On a 2-core machine every process shares the same two cores: a second edge adds a
process to schedule, not CPU, so this measures what the extra processes cost, not a
speed-up. With 2 edges the clients are split evenly between them (a load balancer's
round robin).

Run: .venv/bin/python bench/scale_out.py [--requests-per-client 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from http_load import LoadResult, build_request, run_load  # noqa: E402
from overhead import ROOT, cpu_seconds, create_account, free_port, wait_for  # noqa: E402

BACKENDS = ("catalog", "billing", "provider")
CLIENT_COUNTS = (32, 128)


def start(data_dir: Path, upstream_port: int, edges: int) -> tuple[dict[str, subprocess.Popen], list[int], int, str]:
    """The backends and `edges` edges; returns the processes, the edges' HTTP ports,
    billing's port and the admin token."""
    ports = {name: free_port() for name in BACKENDS}
    admin_token = secrets.token_urlsafe(24)
    env = {key: value for key, value in os.environ.items() if not key.startswith("QUANTIZED_")}
    env.update({
        "QUANTIZED_DATA_DIR": str(data_dir), "QUANTIZED_ADMIN_TOKEN": admin_token,
        **{f"QUANTIZED_{name.upper()}_LISTEN": f"127.0.0.1:{port}" for name, port in ports.items()},
        **{f"QUANTIZED_{name.upper()}_ADDR": f"127.0.0.1:{port}" for name, port in ports.items()},
        # Each process (every edge too) serves its metrics on a free port of its own.
        **{f"QUANTIZED_{name}_METRICS_LISTEN": "127.0.0.1:0"
           for name in ("EDGE", "CATALOG", "BILLING", "PROVIDER")},
        "OPENAI_BASE_URL": f"http://127.0.0.1:{upstream_port}/v1",
        "OPENAI_API_KEY": "sk-bench-not-a-real-key",
    })
    processes: dict[str, subprocess.Popen] = {}

    def spawn(label: str, name: str, extra: dict[str, str]) -> None:
        log = open(data_dir / f"{label}.log", "wb")  # noqa: SIM115 - lives as long as the child
        processes[label] = subprocess.Popen([sys.executable, "-m", "quantized_cli", "serve", name],
                                            env={**env, **extra}, stdout=log, stderr=log, cwd=ROOT)

    for name in BACKENDS:
        spawn(name, name, {})
        wait_for(ports[name])
    http_ports = []
    for index in range(edges):
        http_port = free_port()
        spawn(f"edge{index}", "edge", {"QUANTIZED_EDGE_PORT": str(http_port),
                                       "QUANTIZED_EDGE_GRPC_LISTEN": f"127.0.0.1:{free_port()}"})
        wait_for(http_port)
        http_ports.append(http_port)
    return processes, http_ports, ports["billing"], admin_token


async def spread_load(http_ports: list[int], api_key: str, clients: int, per_client: int) -> LoadResult:
    """`clients` clients split evenly over the edges, all at once; one combined result."""
    body = json.dumps({"model": "gpt-image-1", "prompt": "a small hedgehog", "quality": "low"}).encode()
    requests = [build_request("127.0.0.1", port, "/v1/images/generations", body,
                              {"Authorization": f"Bearer {api_key}"}) for port in http_ports]
    started = time.perf_counter()
    parts = await asyncio.gather(*(run_load("127.0.0.1", port, request, clients // len(http_ports), per_client)
                                   for port, request in zip(http_ports, requests, strict=True)))
    combined = LoadResult(elapsed_s=time.perf_counter() - started)
    for part in parts:
        combined.latencies_ms += part.latencies_ms
        combined.errors += part.errors
        for status, count in part.statuses.items():
            combined.statuses[status] = combined.statuses.get(status, 0) + count
    return combined


async def measure(http_ports: list[int], api_key: str, processes: dict[str, subprocess.Popen],
                  per_client: int) -> dict:
    await spread_load(http_ports, api_key, 4 * len(http_ports), 25)  # warm caches, pools, channels
    report = {}
    for clients in CLIENT_COUNTS:
        cpu_before = {label: cpu_seconds(process.pid) for label, process in processes.items()}
        result = await spread_load(http_ports, api_key, clients, per_client)
        served = max(1, len(result.latencies_ms))
        report[f"{clients}_clients"] = {
            "requests": len(result.latencies_ms), "errors": result.errors, "statuses": result.statuses,
            "rps": round(result.throughput, 1),
            "p50_ms": round(result.percentile(0.5), 2), "p99_ms": round(result.percentile(0.99), 2),
            "cpu_ms_per_request": round(sum(cpu_seconds(process.pid) - cpu_before[label]
                                            for label, process in processes.items()) * 1000 / served, 3),
        }
    return report


def run(edges: int, upstream_port: int, per_client: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        processes, http_ports, billing_port, admin_token = start(Path(tmp), upstream_port, edges)
        try:
            api_key = asyncio.run(create_account(billing_port, admin_token, unlimited=True))
            return asyncio.run(measure(http_ports, api_key, processes, per_client))
        finally:
            for process in processes.values():
                process.terminate()
            for process in processes.values():
                process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests-per-client", type=int, default=40)
    args = parser.parse_args()
    upstream_port = free_port()
    upstream = subprocess.Popen([sys.executable, str(ROOT / "bench" / "zero_latency_openai.py"),
                                 str(upstream_port)], stdout=subprocess.PIPE, text=True)
    assert upstream.stdout.readline().strip() == "ready"
    try:
        report = {"cores": os.cpu_count(),
                  **{f"{edges}_edge{'s' if edges > 1 else ''}": run(edges, upstream_port, args.requests_per_client)
                     for edges in (1, 2)}}
    finally:
        upstream.terminate()
        upstream.wait(10)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
