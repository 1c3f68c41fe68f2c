"""A stack for the money guarantees (issue 14): catalog, billing, provider_svc and
several edges, each a `quantized serve NAME` process, so an edge can be SIGKILLed
and billing restarted the way docs/operations.md says. Billing runs on the
database under test; the OpenAI route is served by the in-process FakeOpenAI,
which records every upstream call.

The load goes through the edges over HTTP; the books are read from billing's own
tables (the system of record) and checked request by request against what each
caller received, by the request id the edge answers with.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from billing_svc.storage.schema import accounts, holds, ledger, usage_records
from quantized.billing.v1 import billing_pb2, billing_pb2_grpc
from quantized.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from quantized_cli.health import wait_until_serving
from quantized_cli.serve import PARENT_PID_ENV
from tests.fake_upstreams import FakeOpenAI, RecordedRequest, Reply

ADMIN_TOKEN = "money-admin-token-0123456789abcdef"
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 30.0
# dall-e-2 is priced per image, so its worst-case quote is exactly its price: an
# account funded for N images can hold N quotes and no more. It is inactive in the
# bundled catalog; each stack activates it through the catalog's admin RPC.
MODEL = "dall-e-2"
SIZE = "256x256"
# Markers in a prompt that steer the fake upstream for that request alone.
FAIL = "[fail]"
FLAG = "[flag]"
SLOW = "[slow]"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def steer(upstream: FakeOpenAI, slow_seconds: float) -> None:
    """Per-request upstream behaviour from the prompt's marker, whatever the
    interleaving of concurrent callers."""
    def behave(request: RecordedRequest) -> Reply:
        prompt = request.json()["prompt"]
        if FAIL in prompt:
            return upstream.error("server_error")
        if FLAG in prompt:
            return upstream.error("content_policy_violation")
        if SLOW in prompt:
            # Runs on the fake's handler thread for this request only.
            time.sleep(slow_seconds)
        return upstream.success(request)
    upstream.always(behave)


def upstream_calls(upstream: FakeOpenAI, marker: str) -> int:
    return sum(1 for request in upstream.requests if marker in request.json()["prompt"])


@dataclass
class Service:
    name: str
    address: str
    process: subprocess.Popen
    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Edge(Service):
    http_port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/v1"


class MoneyStack:
    def __init__(self, root: Path, billing_database_url: str, upstream: FakeOpenAI, *,
                 edges: int = 2, hold_ttl_seconds: float = 480.0, lease_ttl_seconds: float = 30.0,
                 reaper_interval_seconds: float = 30.0, catalog_database_url: str | None = None,
                 edge_env: dict[str, str] | None = None) -> None:
        self.root = root
        self.billing_database_url = billing_database_url
        # None: the catalog's SQLite default in `root`.
        self.catalog_database_url = catalog_database_url
        self.upstream = upstream
        self.edge_count = edges
        self.hold_ttl_seconds = hold_ttl_seconds
        self.lease_ttl_seconds = lease_ttl_seconds
        self.reaper_interval_seconds = reaper_interval_seconds
        # Settings of every edge on top of the stack's own.
        self.edge_env = edge_env or {}
        self.addresses = {name: f"127.0.0.1:{free_port()}" for name in ("catalog", "billing", "provider")}
        self.services: list[Service] = []
        self.edges: list[Edge] = []
        self.billing: Service | None = None
        self._log_index = 0

    def _env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("QUANTIZED_")}
        env.update({
            "QUANTIZED_ADMIN_TOKEN": ADMIN_TOKEN,
            "QUANTIZED_DATA_DIR": str(self.root),
            "QUANTIZED_CATALOG_LISTEN": self.addresses["catalog"],
            "QUANTIZED_BILLING_LISTEN": self.addresses["billing"],
            "QUANTIZED_PROVIDER_LISTEN": self.addresses["provider"],
            "QUANTIZED_CATALOG_ADDR": self.addresses["catalog"],
            "QUANTIZED_BILLING_ADDR": self.addresses["billing"],
            "QUANTIZED_PROVIDER_ADDR": self.addresses["provider"],
            # Each process (each replica too) serves its metrics on a free port of its own.
            **{f"QUANTIZED_{name}_METRICS_LISTEN": "127.0.0.1:0"
               for name in ("EDGE", "CATALOG", "BILLING", "PROVIDER")},
            "QUANTIZED_BILLING_DATABASE_URL": self.billing_database_url,
            "QUANTIZED_BILLING_HOLD_TTL_SECONDS": str(self.hold_ttl_seconds),
            "QUANTIZED_BILLING_LEASE_TTL_SECONDS": str(self.lease_ttl_seconds),
            "QUANTIZED_BILLING_REAPER_INTERVAL_SECONDS": str(self.reaper_interval_seconds),
            **({"QUANTIZED_CATALOG_DATABASE_URL": self.catalog_database_url}
               if self.catalog_database_url else {}),
            # One upstream call per request, so calls can be counted against answers.
            "QUANTIZED_PROVIDER_UPSTREAM_RETRIES": "0",
            # Enabling a row the shipped catalog leaves off takes provider_svc's consent too.
            "QUANTIZED_PROVIDER_ALLOWED_MODELS": f"openai/{MODEL}",
            "OPENAI_BASE_URL": self.upstream.base_url,
            "OPENAI_API_KEY": self.upstream.api_key,
            # `quantized serve` asks Linux for SIGTERM should this test process die.
            PARENT_PID_ENV: str(os.getpid()),
        })
        return env

    def _spawn(self, name: str, env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
        self._log_index += 1
        log_path = self.root / f"{self._log_index:02d}-{name}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen([sys.executable, "-m", "quantized_cli", "serve", name],
                                       env=env, stdout=log, stderr=log)
        return process, log_path

    def _start(self, name: str) -> Service:
        process, log_path = self._spawn(name, self._env())
        service = Service(name, self.addresses[name], process, log_path)
        self.services.append(service)
        return service

    def _start_edge(self) -> Edge:
        grpc_address, http_port = f"127.0.0.1:{free_port()}", free_port()
        env = {**self._env(), **self.edge_env, "QUANTIZED_EDGE_GRPC_LISTEN": grpc_address,
               "QUANTIZED_EDGE_PORT": str(http_port)}
        process, log_path = self._spawn("edge", env)
        edge = Edge("edge", grpc_address, process, log_path, http_port)
        self.services.append(edge)
        return edge

    async def _serving(self, services: Iterable[Service]) -> None:
        for service in services:
            try:
                await wait_until_serving(service.address, START_TIMEOUT_SECONDS,
                                         lambda service=service: service.process.poll() is None)
            except RuntimeError as error:
                raise AssertionError(f"{service.name}: {error}\n{service.log_tail()}") from None

    @staticmethod
    async def _logged(service: Service, text: str) -> None:
        give_up = time.monotonic() + START_TIMEOUT_SECONDS
        while text not in service.log_path.read_text(errors="replace"):
            if service.process.poll() is not None or time.monotonic() > give_up:
                raise AssertionError(f"{service.name} never logged {text}\n{service.log_tail()}")
            await asyncio.sleep(0.05)

    async def start(self) -> MoneyStack:
        backends = [self._start("catalog"), self._start("billing"), self._start("provider")]
        self.billing = backends[1]
        self.edges = [self._start_edge() for _ in range(self.edge_count)]
        await self._serving([*backends, *self.edges])
        await self._admin(self.addresses["catalog"], catalog_pb2_grpc.CatalogAdminServiceStub,
                          "SetProviderModelActive", catalog_pb2.SetProviderModelActiveRequest(
                              provider="openai", model_id=MODEL, is_active=True, actor="money-guarantees"))
        return self

    async def stop(self) -> None:
        # Edges first: billing and provider_svc then have no open stream to drain.
        for group in (self.edges, [service for service in self.services if service not in self.edges]):
            for service in group:
                if service.process.poll() is None:
                    service.process.terminate()
            for service in group:
                await asyncio.to_thread(service.process.wait, STOP_TIMEOUT_SECONDS)

    async def pause_billing(self, seconds: float) -> None:
        """Freeze billing (SIGSTOP) for `seconds`: it reads, answers and reaps nothing meanwhile."""
        assert self.billing is not None
        self.billing.process.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)
        finally:
            self.billing.process.send_signal(signal.SIGCONT)

    def kill_edge(self, index: int) -> None:
        edge = self.edges[index]
        edge.process.send_signal(signal.SIGKILL)
        edge.process.wait(STOP_TIMEOUT_SECONDS)

    async def restart_billing(self) -> int:
        """docs/operations.md: the successor starts on the same address (SO_REUSEPORT),
        then the old process gets SIGTERM and drains. Returns the old one's exit code."""
        old = self.billing
        assert old is not None
        successor = self._start("billing")
        # The old process still answers health checks on the shared address, so
        # wait for the successor's own word that it listens.
        await self._logged(successor, '"message": "billing listening"')
        old.process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(old.process.wait, STOP_TIMEOUT_SECONDS)
        self.billing = successor
        return code

    # Administration and prices through the real RPCs.
    async def _admin(self, address: str, stub_type: Any, method: str, request: Any) -> Any:
        async with grpc.aio.insecure_channel(address) as channel:
            return await getattr(stub_type(channel), method)(
                request, timeout=10, metadata=[("authorization", f"Bearer {ADMIN_TOKEN}")])

    async def create_account(self, credits: int, name: str = "money") -> tuple[str, str]:
        reply = await self._admin(self.addresses["billing"], billing_pb2_grpc.BillingAdminServiceStub,
                                  "CreateAccount", billing_pb2.CreateAccountRequest(
                                      name=name, credits_micro_credits=credits))
        return reply.account.account_id, reply.api_key

    async def create_key(self, account_id: str, *, daily_cap: int | None = None,
                         total_cap: int | None = None) -> tuple[str, str]:
        """Another key of the account, with spending caps: its id and the key."""
        reply = await self._admin(self.addresses["billing"], billing_pb2_grpc.BillingAdminServiceStub,
                                  "CreateApiKey", billing_pb2.CreateApiKeyRequest(
                                      account_id=account_id, caps=billing_pb2.SpendingCaps(
                                          daily_micro_credits=daily_cap, total_micro_credits=total_cap)))
        return reply.key.key_id, reply.api_key

    async def set_caps(self, key_id: str, *, daily_cap: int | None = None,
                       total_cap: int | None = None) -> None:
        await self._admin(self.addresses["billing"], billing_pb2_grpc.BillingAdminServiceStub,
                          "UpdateApiKeyCaps", billing_pb2.UpdateApiKeyCapsRequest(
                              key_id=key_id, caps=billing_pb2.SpendingCaps(
                                  daily_micro_credits=daily_cap, total_micro_credits=total_cap)))

    async def key_spend(self, account_id: str) -> dict[str, billing_pb2.KeySpend]:
        """Each key's spend as billing counts it against the key's caps."""
        reply = await self._admin(self.addresses["billing"], billing_pb2_grpc.BillingAdminServiceStub,
                                  "GetAccount", billing_pb2.GetAccountRequest(account_id=account_id))
        return {key.key_id: key.spend for key in reply.keys}

    async def price_per_image(self) -> int:
        """The catalog's price of one MODEL image at SIZE, which is also its worst case."""
        async with grpc.aio.insecure_channel(self.addresses["catalog"]) as channel:
            quote = await catalog_pb2_grpc.CatalogServiceStub(channel).QuotePrice(
                catalog_pb2.QuotePriceRequest(model_id=MODEL, size=SIZE, n=1), timeout=10)
        assert not quote.usage_priced and quote.max_micro_credits == quote.per_image_micro_credits > 0
        return quote.per_image_micro_credits

    async def books(self, account_id: str) -> Books:
        engine = create_async_engine(self.billing_database_url)
        try:
            async with engine.connect() as connection:
                account = (await connection.execute(
                    select(accounts.c.balance, accounts.c.held).where(accounts.c.id == account_id))).one()
                kinds = dict((await connection.execute(
                    select(ledger.c.kind, func.sum(ledger.c.amount)).where(ledger.c.account_id == account_id)
                    .group_by(ledger.c.kind))).all())
                open_holds = (await connection.execute(
                    select(func.count()).select_from(holds)
                    .where(holds.c.account_id == account_id, holds.c.status == "open"))).scalar_one()
                usage = (await connection.execute(
                    select(usage_records.c.request_id, usage_records.c.images, usage_records.c.credits,
                           usage_records.c.late)
                    .where(usage_records.c.account_id == account_id))).all()
        finally:
            await engine.dispose()
        return Books(account.balance, account.held, {kind: int(total) for kind, total in kinds.items()},
                     open_holds, [Charge(*row) for row in usage])

    async def settled_books(self, account_id: str, within_seconds: float) -> Books:
        """The books once nothing is held any more (holds of lost requests expire and
        are reaped)."""
        give_up = time.monotonic() + within_seconds
        books = await self.books(account_id)
        while (books.held or books.open_holds) and time.monotonic() < give_up:
            await asyncio.sleep(0.2)
            books = await self.books(account_id)
        return books


@dataclass(frozen=True)
class Charge:
    request_id: str
    images: int
    credits: int
    # Taken from the balance because its lease had ended (docs/billing.md, late charges).
    late: bool


@dataclass
class Books:
    balance: int
    held: int
    ledger_by_kind: dict[str, int]
    open_holds: int
    charges: list[Charge]

    @property
    def ledger_sum(self) -> int:
        return sum(self.ledger_by_kind.values())

    @property
    def charged(self) -> int:
        """What the ledger took from the account: every row that is not a grant
        (holds net of their closing rows), so this is the spend once nothing is held."""
        return -sum(amount for kind, amount in self.ledger_by_kind.items() if kind != "grant")


@dataclass
class Answer:
    """What one caller got: `status` None when the connection broke before an answer."""

    status: int | None
    request_id: str | None = None
    images: int = 0
    flagged: int = 0
    credits_used: int | None = None
    error_type: str | None = None


async def post(client: httpx.AsyncClient, body: dict) -> Answer | None:
    """One generation request. None when it was never sent (nobody listening)."""
    try:
        reply = await client.post("/images/generations", json=body)
    except httpx.ConnectError:
        return None
    except httpx.TransportError:
        return Answer(status=None)
    payload = reply.json()
    request_id = reply.headers.get("x-request-id")
    if reply.status_code != 200:
        return Answer(reply.status_code, request_id, error_type=payload["error"]["type"])
    flagged = sum(1 for item in payload["data"] if item["flagged"])
    return Answer(200, request_id, len(payload["data"]) - flagged, flagged, payload["usage"]["credits_used"])


def client_for(edge: Edge, api_key: str, callers: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=edge.base_url, timeout=60,
                             headers={"Authorization": f"Bearer {api_key}"},
                             limits=httpx.Limits(max_connections=callers, max_keepalive_connections=callers))


def body(prompt: str, n: int = 1) -> dict:
    return {"model": MODEL, "prompt": prompt, "size": SIZE, "n": n}


@dataclass
class Audit:
    """Each caller's answers checked against billing's books, request by request."""

    requests: int
    delivered: int
    charged: int
    drift: int
    cut_off: int
    cut_off_charged: int
    problems: list[str] = field(default_factory=list)

    def figure_line(self) -> str:
        return (f"requests={self.requests} images_delivered={self.delivered} credits_charged={self.charged} "
                f"drift={self.drift} cut_off={self.cut_off} cut_off_charged={self.cut_off_charged}")


def audit(answers: list[Answer], books: Books, price: int, opening_credits: int) -> Audit:
    """The guarantees of issue 14 for one account:
    - balance equals the sum of the ledger, and nothing is held;
    - every image a caller received is charged exactly once, at the catalog's price;
    - a request answered with an error, or with flagged images only, is charged nothing;
    - a request cut off without an answer (its edge died) is charged in full or not
      at all, and only requests of this account are charged to it.
    `drift` is what the ledger charged beyond those charges (must be 0)."""
    problems: list[str] = []
    if books.balance != books.ledger_sum:
        problems.append(f"balance {books.balance} != ledger sum {books.ledger_sum}")
    if books.held or books.open_holds:
        problems.append(f"still held: {books.held} in {books.open_holds} open holds")
    if books.ledger_by_kind.get("grant") != opening_credits:
        problems.append(f"grants {books.ledger_by_kind.get('grant')} != {opening_credits}")
    by_request: dict[str, list[Charge]] = {}
    for charge in books.charges:
        by_request.setdefault(charge.request_id, []).append(charge)
    expected = 0
    delivered = 0
    for answer in answers:
        if answer.status is None:
            continue
        charges = by_request.pop(answer.request_id, [])
        credits = sum(charge.credits for charge in charges)
        if answer.status == 200:
            delivered += answer.images
            want = answer.images * price
            # A flagged-only answer may or may not leave a zero usage record.
            once = len(charges) == 1 if want else len(charges) <= 1
            if not once or credits != want or answer.credits_used != want:
                problems.append(f"{answer.request_id}: {answer.images} images delivered, answered credits_used="
                                f"{answer.credits_used}, charged {[c.credits for c in charges]} (want {want} once)")
            expected += want
        elif credits:
            problems.append(f"{answer.request_id}: answered {answer.status} yet charged {credits}")
    # What is left was charged to requests whose callers got no answer.
    cut_off = sum(1 for answer in answers if answer.status is None)
    unanswered = [charge for charges in by_request.values() for charge in charges]
    cut_off_charged = sum(1 for charge in unanswered if charge.credits)
    for charge in unanswered:
        if charge.credits != charge.images * price:
            problems.append(f"{charge.request_id}: cut off, {charge.images} images charged {charge.credits}")
    if cut_off_charged > cut_off:
        problems.append(f"{cut_off_charged} charges for requests nobody here sent (only {cut_off} were cut off)")
    cut_off_credits = sum(charge.credits for charge in unanswered)
    if sum(charge.credits for charge in books.charges) != books.charged:
        problems.append(f"usage records total {sum(c.credits for c in books.charges)} != ledger {books.charged}")
    return Audit(requests=len(answers), delivered=delivered, charged=books.charged,
                 drift=books.charged - expected - cut_off_credits, cut_off=cut_off,
                 cut_off_charged=cut_off_charged, problems=problems)
