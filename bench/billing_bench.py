"""Billing throughput and latency over gRPC on this machine (not a test).

Starts a real billing server as a separate process (so server and client each
have a core), on SQLite and on PostgreSQL, and measures:
  - the floor: bare health-check RPCs on the same server (no database),
    C concurrent callers;
  - Reserve+Settle pairs per second through the Ledger stream, with the edge's
    own client (edge.ledger_client.LedgerClient and its natural batching): L
    logical callers, one account each, share one stream; while N batches are in
    flight (the edge allows MAX_BATCHES_IN_FLIGHT) the next accumulates;
  - the same with every caller on one hot account (the row-lock worst case);
  - Authenticate latency (p50/p99), sequential, for an API key and an HS256 JWT;
  - billing's domain and storage alone, in process, without gRPC: C callers,
    each Reserve and Settle a batch of one (Billing.apply_batch);
  - a cached authentication as the edge does it (a dict hit, no RPC), for scale.

Usage: .venv/bin/python bench/billing_bench.py [--seconds 8] [--concurrency 16]
       [--ledger-callers 64] [--ledger-streams 1] [--ledger-in-flight 1]
PostgreSQL: QUANTIZED_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test);
a scratch database is created and dropped. Figures go in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

from quantized_runtime.grpc_engine import prefer_polling_engine

# Clients and servers here run gRPC core's engine as the services do (before grpc loads).
prefer_polling_engine()

import asyncpg  # noqa: E402
import grpc  # noqa: E402
import jwt  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from billing_svc.domain import LeasePolicy, LedgerOp, ReserveOp, SettleOp, Usage  # noqa: E402
from billing_svc.jwt_verifier import JwtVerifier  # noqa: E402
from billing_svc.service import Billing  # noqa: E402
from billing_svc.storage.admin_store import AdminStore  # noqa: E402
from billing_svc.storage.engine import Database, create_engine  # noqa: E402
from billing_svc.storage.factory import money_store_for  # noqa: E402
from billing_svc.storage.migrate import upgrade_to_head  # noqa: E402
from billing_svc.storage.usage_store import UsageStore  # noqa: E402
from edge import ledger_client  # noqa: E402
from edge.ledger_client import LedgerClient  # noqa: E402
from quantized.billing.v1 import billing_pb2 as pb  # noqa: E402
from quantized.billing.v1 import billing_pb2_grpc  # noqa: E402
from quantized_runtime.channels import open_channel  # noqa: E402
from quantized_runtime.errors import ServiceError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "bench-admin-token-0123456789abcdef"
ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
JWT_SECRET = "bench-hs256-secret-with-at-least-32-bytes"
JWT_ISSUER, JWT_AUDIENCE = "https://issuer.bench.example", "quantized-bench"
POSTGRES_DSN = os.environ.get("QUANTIZED_TEST_POSTGRES_URL",
                              "postgresql://postgres@127.0.0.1:5432/test")
PRICE = 40_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def start_server(database_url: str, data_dir: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'gen'}",
           "QUANTIZED_BILLING_LISTEN": f"127.0.0.1:{port}", "QUANTIZED_BILLING_METRICS_LISTEN": "127.0.0.1:0",
           "QUANTIZED_BILLING_DATABASE_URL": database_url, "QUANTIZED_DATA_DIR": data_dir,
           "QUANTIZED_ADMIN_TOKEN": ADMIN_TOKEN, "QUANTIZED_JWT_SECRET": JWT_SECRET,
           "QUANTIZED_JWT_ISSUER": JWT_ISSUER, "QUANTIZED_JWT_AUDIENCE": JWT_AUDIENCE,
           "QUANTIZED_BILLING_LOG_LEVEL": "WARNING"}
    profile = os.environ.get("BILLING_BENCH_PROFILE")
    command = ([sys.executable, "-m", "cProfile", "-o", profile, "-m", "billing_svc.main"]
               if profile else [sys.executable, "-m", "billing_svc.main"])
    process = subprocess.Popen(command, env=env, cwd=ROOT)
    address = f"127.0.0.1:{port}"
    channel = open_channel(address)
    try:
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(300):
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return process, address
            except grpc.RpcError:
                pass
            if process.poll() is not None:
                raise SystemExit("billing server exited during start")
            await asyncio.sleep(0.1)
    finally:
        await channel.close()
    process.terminate()
    raise SystemExit("billing server did not become healthy")


def servers_cpu_seconds(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class CountingLedgerClient(LedgerClient):
    """The edge's own Ledger client, counting the batches answered and their operations."""

    def __init__(self, stub: billing_pb2_grpc.BillingServiceStub) -> None:
        super().__init__(stub)
        self.batches = 0
        self.operations = 0

    def _answered(self, batch: Any, answer: pb.LedgerResponse) -> bool:
        self.batches += 1
        self.operations += len(answer.results)
        return super()._answered(batch, answer)


async def ledger_pairs_per_second(stub, admin, server_pids: list[int], args,
                                  hot_account: bool) -> tuple[float, float, float, float]:
    """Pairs per second through Ledger streams, server and client CPU milliseconds
    per pair, and the mean operations per batch."""
    funding = 10**14
    if hot_account:
        shared = (await admin.CreateAccount(pb.CreateAccountRequest(
            name="hot-ledger", credits_micro_credits=funding), metadata=ADMIN)).account.account_id
        account_ids = [shared] * args.ledger_callers
    else:
        account_ids = [(await admin.CreateAccount(pb.CreateAccountRequest(
            name=f"ledger-{i}", credits_micro_credits=funding), metadata=ADMIN)
        ).account.account_id for i in range(args.ledger_callers)]
    # The client's batching policy, with the number of batches in flight it allows set from the options.
    ledger_client.MAX_BATCHES_IN_FLIGHT = args.ledger_in_flight
    batchers = [CountingLedgerClient(stub) for _ in range(args.ledger_streams)]
    done = 0
    stop_at = 0.0

    async def caller(index: int, account_id: str) -> None:
        nonlocal done
        batcher = batchers[index % len(batchers)]
        while time.perf_counter() < stop_at:
            hold = await batcher.reserve(pb.ReserveRequest(
                account_id=account_id, amount_micro_credits=PRICE, request_id=uuid.uuid4().hex), timeout=10)
            await batcher.settle(pb.SettleRequest(
                hold_id=hold.hold_id, amount_micro_credits=PRICE // 2,
                usage=pb.UsageRecord(model_id="gpt-image-1", provider="openai", images=1)), timeout=10)
            done += 1

    try:
        stop_at = time.perf_counter() + 1.0
        await asyncio.gather(*(caller(i, a) for i, a in enumerate(account_ids)))
        done = 0
        batches_before = sum(b.batches for b in batchers)
        operations_before = sum(b.operations for b in batchers)
        server_cpu, client_cpu = servers_cpu_seconds(server_pids), time.process_time()
        started = time.perf_counter()
        stop_at = started + args.seconds
        await asyncio.gather(*(caller(i, a) for i, a in enumerate(account_ids)))
        elapsed = time.perf_counter() - started
        server_ms = (servers_cpu_seconds(server_pids) - server_cpu) * 1000 / done
        client_ms = (time.process_time() - client_cpu) * 1000 / done
        batch_size = ((sum(b.operations for b in batchers) - operations_before)
                      / (sum(b.batches for b in batchers) - batches_before))
    finally:
        for batcher in batchers:
            await batcher.close()
    return done / elapsed, server_ms, client_ms, batch_size


async def domain_pairs_per_second(database_url: str, concurrency: int,
                                  seconds: float) -> tuple[float, float]:
    """Billing's own work without gRPC: the Billing use cases on the real database,
    in this process. Pairs per second and CPU milliseconds per pair (this process)."""
    database = Database(create_engine(database_url, pool_size=concurrency))
    await upgrade_to_head(database.engine)
    lease_policy = LeasePolicy(share=Fraction(1, 2), ttl=timedelta(seconds=30))
    billing = Billing(money_store_for(database, lease_policy), AdminStore(database), UsageStore(database),
                      JwtVerifier(secret=None, public_keys=[], issuer=None, audience=None, leeway_seconds=0),
                      timedelta(minutes=8))
    account_ids = [(await billing.create_account(f"domain-{i}", 10**14, False))[0].account_id
                   for i in range(concurrency)]
    done = 0
    stop_at = time.perf_counter() + 1.0

    async def apply(op: LedgerOp) -> Any:
        [outcome] = await billing.apply_batch([op])
        if isinstance(outcome, ServiceError):
            raise outcome
        return outcome

    async def worker(account_id: str) -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            hold = await apply(ReserveOp(account_id, PRICE, uuid.uuid4().hex))
            await apply(SettleOp(hold.hold_id, PRICE // 2,
                                 Usage(model_id="gpt-image-1", provider="openai", images=1)))
            done += 1

    try:
        await asyncio.gather(*(worker(a) for a in account_ids))
        done = 0
        client_cpu = time.process_time()
        started = time.perf_counter()
        stop_at = started + seconds
        await asyncio.gather(*(worker(a) for a in account_ids))
        elapsed = time.perf_counter() - started
        return done / elapsed, (time.process_time() - client_cpu) * 1000 / done
    finally:
        await database.dispose()


async def bare_rpc_cost(channel, server_pids: list[int], concurrency: int,
                        seconds: float) -> tuple[float, float, float]:
    """The floor: health checks on the same server (no interceptor, no database)."""
    health = health_pb2_grpc.HealthStub(channel)
    done = 0
    stop_at = time.perf_counter() + 1.0

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
            done += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    done = 0
    server_cpu, client_cpu = servers_cpu_seconds(server_pids), time.process_time()
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return (done / elapsed, (servers_cpu_seconds(server_pids) - server_cpu) * 1000 / done,
            (time.process_time() - client_cpu) * 1000 / done)


async def auth_latency(stub, token: str, calls: int) -> tuple[float, float]:
    for _ in range(50):
        await stub.Authenticate(pb.AuthenticateRequest(token=token), timeout=10)
    samples = []
    for _ in range(calls):
        began = time.perf_counter()
        await stub.Authenticate(pb.AuthenticateRequest(token=token), timeout=10)
        samples.append((time.perf_counter() - began) * 1000)
    return statistics.median(samples), percentile(samples, 0.99)


def cached_auth_latency(token: str, calls: int) -> tuple[float, float]:
    """A cache hit as the edge serves repeat callers: a dict lookup with an expiry check."""
    cache = {token: ("acct", time.monotonic() + 30)}
    samples = []
    for _ in range(calls):
        began = time.perf_counter()
        entry = cache.get(token)
        assert entry is not None and entry[1] > time.monotonic()
        samples.append((time.perf_counter() - began) * 1000)
    return statistics.median(samples), percentile(samples, 0.99)


async def run_backend(name: str, database_url: str, data_dir: str, args) -> None:
    # Replicas share the database; the channel balances round robin over them, so
    # each Ledger stream (one per --ledger-streams) opens on the next replica.
    servers = [await start_server(database_url, data_dir) for _ in range(args.replicas)]
    processes = [process for process, _ in servers]
    pids = [process.pid for process in processes]
    channel = open_channel(",".join(address for _, address in servers))
    try:
        stub = billing_pb2_grpc.BillingServiceStub(channel)
        admin = billing_pb2_grpc.BillingAdminServiceStub(channel)
        ledger_spread = await ledger_pairs_per_second(stub, admin, pids, args, False)
        ledger_hot = await ledger_pairs_per_second(stub, admin, pids, args, True)
        bare = await bare_rpc_cost(channel, pids, args.concurrency, args.seconds / 2)
        created = await admin.CreateAccount(pb.CreateAccountRequest(
            name="auth", credits_micro_credits=1), metadata=ADMIN)
        key_p50, key_p99 = await auth_latency(stub, created.api_key, args.auth_calls)
        now = int(time.time())
        token = jwt.encode({"sub": created.account.account_id, "iss": JWT_ISSUER, "aud": JWT_AUDIENCE,
                            "iat": now, "exp": now + 3600}, JWT_SECRET, algorithm="HS256")
        jwt_p50, jwt_p99 = await auth_latency(stub, token, args.auth_calls)
        for label, (rate, server_ms, client_ms, batch_size) in (
                ("one account each", ledger_spread), ("one hot account", ledger_hot)):
            print(f"{name}: reserve+settle through Ledger, {args.replicas} billing replica(s), "
                  f"{args.ledger_callers} callers on "
                  f"{args.ledger_streams} stream(s), up to {args.ledger_in_flight} batch(es) "
                  f"in flight each, {label}: {rate:.0f} pairs/s; CPU per "
                  f"pair: server {server_ms:.2f} ms, client {client_ms:.2f} ms; "
                  f"{batch_size:.1f} operations per batch")
        print(f"{name}: floor, bare health-check RPC, {args.concurrency} callers: "
              f"{bare[0]:.0f} RPC/s; CPU per RPC: server {bare[1]:.2f} ms, "
              f"client {bare[2]:.2f} ms")
        print(f"{name}: Authenticate API key p50 {key_p50:.3f} ms, p99 {key_p99:.3f} ms")
        print(f"{name}: Authenticate HS256 JWT p50 {jwt_p50:.3f} ms, p99 {jwt_p99:.3f} ms")
    finally:
        await channel.close()
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=20)
    rate, cpu_ms = await domain_pairs_per_second(database_url, args.concurrency, args.seconds)
    print(f"{name}: domain only (no gRPC), {args.concurrency} callers, one account each: "
          f"{rate:.0f} pairs/s; CPU per pair {cpu_ms:.2f} ms")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=16,
                        help="callers of the floor's health checks and of the domain-only run")
    parser.add_argument("--ledger-callers", type=int, default=64,
                        help="logical callers sharing the Ledger stream(s)")
    parser.add_argument("--ledger-streams", type=int, default=1)
    parser.add_argument("--ledger-in-flight", type=int, default=ledger_client.MAX_BATCHES_IN_FLIGHT,
                        help="batches in flight per stream before the next one waits (default: the edge's)")
    parser.add_argument("--auth-calls", type=int, default=2000)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--replicas", type=int, default=1,
                        help="billing processes on the one database (PostgreSQL: the scale-out case)")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
          f"load average at start {os.getloadavg()[0]:.2f}")
    if args.backend in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as data_dir:
            await run_backend("sqlite", f"sqlite+aiosqlite:///{data_dir}/billing.db", data_dir,
                              args)
    if args.backend in ("postgres", "both"):
        name = f"billing_bench_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(POSTGRES_DSN)
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
        base = POSTGRES_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
        try:
            with tempfile.TemporaryDirectory() as data_dir:
                await run_backend("postgres", f"{base}/{name}", data_dir, args)
        finally:
            admin = await asyncpg.connect(POSTGRES_DSN)
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()
    p50, p99 = cached_auth_latency("sk-quantized-example", 100_000)
    print(f"edge cache hit (modelled): p50 {p50 * 1000:.2f} us, p99 {p99 * 1000:.2f} us")


if __name__ == "__main__":
    asyncio.run(main())
