"""Full-stack overhead benchmark (issue 7): the four services as separate processes,
exactly as `quantized dev` runs them, against a zero-latency local OpenAI upstream.

Measures, for small gpt-image-1 images:
- added latency (router minus direct upstream) p50/p99 with 1 and with 32 clients;
- requests per second and errors at 32 clients;
- CPU time per request summed over the four service processes (rusage via /proc);
- peak RSS of each service;
and a 30 MB image end to end: added latency and each service's peak memory growth.

The bare hop (bench/passthrough_proxy.py: one aiohttp process forwarding to the same
upstream) is measured in the same run with the same load generator; the router's
added p50/p99, requests per second, p99 and CPU per request are also given as
ratios to it (`vs_bare`), since absolute times move from host to host.

With --mtls the internal plane runs mutual TLS with a throwaway CA, as `quantized
dev` and production do; run with and without it alternately to measure its cost.
`--limiter` sets the bench key's and account's rate limits: `off` (none, so the
edge skips the limiter), `local` (limits far above the load, counted in the edge's
memory) or `redis` (the same, counted in a redis-server the run starts).
`--metrics off` starts the services without their Prometheus metrics servers
(on by default, as in production); run `on` and `off` alternately to measure
the metrics' cost per request.

With --tracing every service traces every request (--tracing RATIO: that share
of them, QUANTIZED_TRACING_SAMPLE_RATIO) and exports its spans over OTLP/HTTP to a
sink that discards them (bench/otlp_sink.py); run with and without it alternately
to measure its cost.

Run: .venv/bin/python bench/overhead.py [--requests 3000] [--big-mb 30] [--mtls] [--limiter local] [--tracing [RATIO]] [--metrics on|off]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))

from http_load import build_request, one_request, run_load  # noqa: E402

from quantized.billing.v1 import billing_pb2, billing_pb2_grpc  # noqa: E402
from quantized_cli.certificates import issue_dev_certificates  # noqa: E402
from quantized_runtime.channels import open_channel  # noqa: E402
from quantized_runtime.tls import TLS_VARIABLES, TlsFiles  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("catalog", "billing", "provider", "edge")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def reset_peak_rss(pid: int) -> None:
    # Linux >= 4.0: writing 5 to clear_refs resets VmHWM to the current RSS.
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass


def wait_for(port: int, deadline: float = 60) -> None:
    give_up = time.monotonic() + deadline
    while time.monotonic() < give_up:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port}")


def start_stack(data_dir: Path, upstream_port: int, extra_env: dict[str, str] | None = None,
                certificates: dict[str, TlsFiles] | None = None,
                ) -> tuple[dict[str, subprocess.Popen], dict[str, int], str]:
    ports = {name: free_port() for name in (*SERVICES, "http")}
    admin_token = secrets.token_urlsafe(24)
    env = {key: value for key, value in os.environ.items() if not key.startswith("QUANTIZED_")}
    env.update({
        "QUANTIZED_DATA_DIR": str(data_dir), "QUANTIZED_ADMIN_TOKEN": admin_token,
        "QUANTIZED_CATALOG_LISTEN": f"127.0.0.1:{ports['catalog']}",
        "QUANTIZED_BILLING_LISTEN": f"127.0.0.1:{ports['billing']}",
        "QUANTIZED_PROVIDER_LISTEN": f"127.0.0.1:{ports['provider']}",
        "QUANTIZED_EDGE_GRPC_LISTEN": f"127.0.0.1:{ports['edge']}",
        "QUANTIZED_EDGE_PORT": str(ports["http"]),
        "QUANTIZED_CATALOG_ADDR": f"127.0.0.1:{ports['catalog']}",
        "QUANTIZED_BILLING_ADDR": f"127.0.0.1:{ports['billing']}",
        "QUANTIZED_PROVIDER_ADDR": f"127.0.0.1:{ports['provider']}",
        "OPENAI_BASE_URL": f"http://127.0.0.1:{upstream_port}/v1",
        "OPENAI_API_KEY": "sk-bench-not-a-real-key",
        **(extra_env or {}),
    })
    processes = {}
    for name in SERVICES:
        log = open(data_dir / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the child
        own_env = dict(env)
        if certificates is not None:
            files = certificates[name]
            own_env.update(zip(TLS_VARIABLES, map(str, (files.cert_file, files.key_file, files.ca_file)),
                               strict=True))
        processes[name] = subprocess.Popen([sys.executable, "-m", "quantized_cli", "serve", name],
                                           env=own_env, stdout=log, stderr=log, cwd=ROOT)
        wait_for(ports[name])
    wait_for(ports["http"])
    return processes, ports, admin_token


# Far above any load this bench makes: every request is counted, none refused.
UNREACHED_LIMITS = billing_pb2.LimitSetting(requests_per_minute=10_000_000, max_concurrent_requests=100_000)
NO_LIMITS = billing_pb2.LimitSetting(requests_per_minute=0, max_concurrent_requests=0)


# A limited account that the bench cannot spend, so its requests take the path of
# every paying caller (a credit lease, or exact holds with --exact-holds).
BENCH_CREDITS = 10**14


async def create_account(billing_port: int, admin_token: str, limiter: str = "local",
                         operator: TlsFiles | None = None, unlimited: bool = False,
                         capped: bool = False) -> str:
    metadata = [("authorization", f"Bearer {admin_token}")]
    limits = NO_LIMITS if limiter == "off" else UNREACHED_LIMITS
    account = (billing_pb2.CreateAccountRequest(name="bench", unlimited=True) if unlimited
               else billing_pb2.CreateAccountRequest(name="bench", credits_micro_credits=BENCH_CREDITS))
    async with open_channel(f"127.0.0.1:{billing_port}", tls=operator, peer="billing") as channel:
        admin = billing_pb2_grpc.BillingAdminServiceStub(channel)
        reply = await admin.CreateAccount(account, metadata=metadata, timeout=10)
        await admin.UpdateApiKeyLimits(billing_pb2.UpdateApiKeyLimitsRequest(
            key_id=reply.key.key_id, limits=limits), metadata=metadata, timeout=10)
        await admin.UpdateAccountLimits(billing_pb2.UpdateAccountLimitsRequest(
            account_id=reply.account.account_id, limits=limits), metadata=metadata, timeout=10)
        if capped:
            # A cap the run never reaches: every request takes a hold checked against it.
            await admin.UpdateApiKeyCaps(billing_pb2.UpdateApiKeyCapsRequest(
                key_id=reply.key.key_id, caps=billing_pb2.SpendingCaps(total_micro_credits=BENCH_CREDITS)),
                metadata=metadata, timeout=10)
    return reply.api_key


def billing_operations(database: Path) -> dict:
    """What billing wrote for the whole run: requests charged, and how often the
    edge had to ask for money (lease grants and extensions, or exact holds)."""
    with sqlite3.connect(database) as books:
        charged = books.execute("SELECT count(*) FROM usage_records").fetchone()[0]
        lease_grants = books.execute(
            "SELECT count(*) FROM ledger JOIN holds ON holds.id = ledger.hold_id "
            "WHERE ledger.kind = 'hold' AND holds.kind = 'lease'").fetchone()[0]
        exact_holds = books.execute("SELECT count(*) FROM holds WHERE kind = 'request'").fetchone()[0]
    return {"requests_charged": charged, "lease_grants": lease_grants, "exact_holds": exact_holds,
            "requests_per_money_request": round(charged / max(1, lease_grants + exact_holds), 1)}


def summarise(label: str, result) -> dict:
    return {"label": label, "requests": len(result.latencies_ms), "errors": result.errors,
            "p50_ms": round(result.percentile(0.50), 3), "p99_ms": round(result.percentile(0.99), 3),
            "rps": round(result.throughput, 1), "statuses": result.statuses}


def ratio(router: float, bare: float) -> float | None:
    return round(router / bare, 2) if bare > 0 else None


async def measure(ports: dict[str, int], upstream_port: int, api_key: str, processes: dict,
                  total_requests: int, bare: subprocess.Popen, bare_port: int) -> dict:
    body = json.dumps({"model": "gpt-image-1", "prompt": "a small hedgehog", "quality": "low"}).encode()
    routed = build_request("127.0.0.1", ports["http"], "/v1/images/generations", body,
                           {"Authorization": f"Bearer {api_key}"})
    direct = build_request("127.0.0.1", upstream_port, "/v1/images/generations", body,
                           {"Authorization": "Bearer sk-bench-not-a-real-key"})
    proxied = build_request("127.0.0.1", bare_port, "/v1/images/generations", body,
                            {"Authorization": "Bearer sk-bench-not-a-real-key"})
    report: dict = {}
    # Warm caches, pools and channels.
    await run_load("127.0.0.1", ports["http"], routed, 4, 50)
    await run_load("127.0.0.1", bare_port, proxied, 4, 50)
    for clients in (1, 32):
        per_client = max(1, (total_requests // 3 if clients == 1 else total_requests) // clients)
        base = await run_load("127.0.0.1", upstream_port, direct, clients, per_client)
        bare_cpu_before = cpu_seconds(bare.pid)
        hop = await run_load("127.0.0.1", bare_port, proxied, clients, per_client)
        bare_cpu_ms = (cpu_seconds(bare.pid) - bare_cpu_before) * 1000 / max(1, len(hop.latencies_ms))
        pids = {name: process.pid for name, process in processes.items()}
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        via = await run_load("127.0.0.1", ports["http"], routed, clients, per_client)
        cpu_used = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
        served = max(1, len(via.latencies_ms))
        added = {"p50": via.percentile(0.5) - base.percentile(0.5),
                 "p99": via.percentile(0.99) - base.percentile(0.99)}
        bare_added = {"p50": hop.percentile(0.5) - base.percentile(0.5),
                      "p99": hop.percentile(0.99) - base.percentile(0.99)}
        cpu_total_ms = sum(cpu_used.values()) * 1000 / served
        report[f"{clients}_clients"] = {
            "direct": summarise("direct", base), "router": summarise("router", via),
            "bare_hop": {**summarise("bare hop", hop),
                         "added_p50_ms": round(bare_added["p50"], 3),
                         "added_p99_ms": round(bare_added["p99"], 3),
                         "cpu_ms_per_request": round(bare_cpu_ms, 3)},
            "added_p50_ms": round(added["p50"], 3),
            "added_p99_ms": round(added["p99"], 3),
            "cpu_ms_per_request": {name: round(seconds * 1000 / served, 3) for name, seconds in cpu_used.items()},
            "cpu_ms_per_request_total": round(cpu_total_ms, 3),
            # Router / bare hop, except rps_share: the router's share of the bare hop's throughput.
            "vs_bare": {
                "added_p50": ratio(added["p50"], bare_added["p50"]),
                "added_p99": ratio(added["p99"], bare_added["p99"]),
                "p99": ratio(via.percentile(0.99), hop.percentile(0.99)),
                "rps_share": ratio(via.throughput, hop.throughput),
                "cpu_per_request": ratio(cpu_total_ms, bare_cpu_ms),
            },
        }
    report["peak_rss_mib"] = {name: round(memory_kib(p.pid, "VmHWM") / 1024, 1) for name, p in processes.items()}
    return report


async def measure_big(ports: dict[str, int], upstream_port: int, api_key: str, processes: dict) -> dict:
    body = json.dumps({"model": "gpt-image-1", "prompt": "a BIG hedgehog"}).encode()
    routed = build_request("127.0.0.1", ports["http"], "/v1/images/generations", body,
                           {"Authorization": f"Bearer {api_key}"})
    direct = build_request("127.0.0.1", upstream_port, "/v1/images/generations", body, {})
    _, direct_body, direct_ms = await one_request("127.0.0.1", upstream_port, direct)
    image_bytes = len(json.loads(direct_body)["data"][0]["b64_json"]) * 3 // 4
    await one_request("127.0.0.1", ports["http"], routed)  # warm-up at this size
    rss_before = {}
    for name, process in processes.items():
        reset_peak_rss(process.pid)
        rss_before[name] = memory_kib(process.pid, "VmRSS")
    runs = []
    for _ in range(3):
        status, _, routed_ms = await one_request("127.0.0.1", ports["http"], routed)
        _, _, direct_ms = await one_request("127.0.0.1", upstream_port, direct)
        runs.append((status, routed_ms - direct_ms))
    growth = {name: round((memory_kib(p.pid, "VmHWM") - rss_before[name]) * 1024 / image_bytes, 2)
              for name, p in processes.items()}
    return {"image_mib": round(image_bytes / 2**20, 1), "statuses": [s for s, _ in runs],
            "added_ms": sorted(round(ms, 1) for _, ms in runs),
            "peak_growth_over_rss_in_image_sizes": growth}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000, help="requests in the 32-client run")
    parser.add_argument("--big-mb", type=int, default=30)
    parser.add_argument("--mtls", action="store_true", help="mutual TLS between the services")
    parser.add_argument("--limiter", choices=("off", "local", "redis"), default="local")
    parser.add_argument("--exact-holds", action="store_true",
                        help="no credit leases: an exact hold at billing for every request")
    parser.add_argument("--unlimited", action="store_true",
                        help="an unlimited account (no lease, no hold; charges only)")
    parser.add_argument("--capped", action="store_true",
                        help="the bench key has a spending cap (never reached): an exact hold per request")
    parser.add_argument("--tracing", type=float, nargs="?", const=1.0, default=None, metavar="RATIO",
                        help="tracing on at this sample ratio (default 1.0), exporting to a discarding OTLP sink")
    parser.add_argument("--metrics", choices=("on", "off"), default="on",
                        help="each service's Prometheus metrics (on: served on a free port; off: none)")
    args = parser.parse_args()
    upstream_port = free_port()
    upstream = subprocess.Popen([sys.executable, str(ROOT / "bench" / "zero_latency_openai.py"),
                                 str(upstream_port), "--big-bytes", str(args.big_mb * 2**20)],
                                stdout=subprocess.PIPE, text=True)
    assert upstream.stdout.readline().strip() == "ready"
    bare_port = free_port()
    bare = subprocess.Popen([sys.executable, str(ROOT / "bench" / "passthrough_proxy.py"),
                             str(bare_port), str(upstream_port)], stdout=subprocess.PIPE, text=True)
    assert bare.stdout.readline().strip() == "ready"
    with tempfile.TemporaryDirectory() as tmp:
        certificates = issue_dev_certificates(Path(tmp) / "tls") if args.mtls else None
        redis_server = None
        extra_env = {"QUANTIZED_EDGE_CREDIT_LEASES": "false"} if args.exact_holds else {}
        extra_env.update({f"QUANTIZED_{name.upper()}_METRICS_LISTEN": "127.0.0.1:0" if args.metrics == "on" else ""
                          for name in SERVICES})
        if args.limiter == "redis":
            redis_port = free_port()
            redis_server = subprocess.Popen(
                ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)
            wait_for(redis_port)
            extra_env["QUANTIZED_EDGE_REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
        sink = None
        if args.tracing is not None:
            sink_port = free_port()
            sink = subprocess.Popen([sys.executable, str(ROOT / "bench" / "otlp_sink.py"), str(sink_port)],
                                    stdout=subprocess.PIPE, text=True)
            assert sink.stdout.readline().strip() == "ready"
            extra_env.update({"QUANTIZED_TRACING": "true", "QUANTIZED_TRACING_SAMPLE_RATIO": str(args.tracing),
                              "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{sink_port}/v1/traces"})
        processes, ports, admin_token = start_stack(Path(tmp), upstream_port, extra_env,
                                                    certificates=certificates)
        try:
            api_key = asyncio.run(create_account(ports["billing"], admin_token, args.limiter,
                                                 certificates["operator"] if certificates else None,
                                                 unlimited=args.unlimited, capped=args.capped))
            report = asyncio.run(measure(ports, upstream_port, api_key, processes, args.requests,
                                         bare, bare_port))
            report["big_image"] = asyncio.run(measure_big(ports, upstream_port, api_key, processes))
            report["billing_operations"] = billing_operations(Path(tmp) / "billing.db")
        finally:
            for process in (*processes.values(), bare):
                process.terminate()
            for process in processes.values():
                process.wait(30)
            bare.wait(10)
            upstream.terminate()
            upstream.wait(10)
            if redis_server is not None:
                redis_server.terminate()
                redis_server.wait(10)
            if sink is not None:
                sink.terminate()
                sink.wait(10)
    report["credit_leases"] = not args.exact_holds
    report["account"] = "unlimited" if args.unlimited else "limited"
    report["key_capped"] = args.capped
    report["mtls"] = args.mtls
    report["limiter"] = args.limiter
    report["tracing_sample_ratio"] = args.tracing
    report["metrics"] = args.metrics
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
