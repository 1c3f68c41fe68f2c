"""Fixtures for the billing tests: a database on SQLite and PostgreSQL, real
billing servers started with `billing_svc.main.start`, and a client that reads
typed errors off the wire: a unary call's status, or a Ledger operation's
CallError."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from billing_svc.main import RunningBilling, start
from billing_svc.settings import BillingSettings
from billing_svc.storage.schema import accounts, holds, ledger, usage_records
from quantized.billing.v1 import billing_pb2 as pb
from quantized.billing.v1 import billing_pb2_grpc
from quantized_runtime import client as rpc
from quantized_runtime.defaults import sqlite_url
from quantized_runtime.errors import ServiceError, from_call_error
from tests.harness import serving

ADMIN_TOKEN = "test-admin-token-for-billing-0123456"
ADMIN_METADATA = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
BILLING_ENV = ("QUANTIZED_ADMIN_TOKEN", "QUANTIZED_DATA_DIR", "QUANTIZED_JWT_SECRET",
               "QUANTIZED_JWT_JWKS_FILE", "QUANTIZED_JWT_ISSUER", "QUANTIZED_JWT_AUDIENCE",
               "QUANTIZED_JWT_LEEWAY_SECONDS", "QUANTIZED_JWT_MAX_LIFETIME_SECONDS")


@pytest.fixture(autouse=True)
def _clean_billing_environment(monkeypatch) -> None:
    """Settings come from the test, never from the shell that runs it."""
    for name in [*BILLING_ENV, *(n for n in os.environ if n.startswith("QUANTIZED_BILLING_"))]:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def sqlite_database_url(data_dir) -> str:
    return sqlite_url(data_dir, "billing.db")


def make_settings(database_url: str, data_dir: str, **overrides: Any) -> BillingSettings:
    values: dict[str, Any] = dict(listen="127.0.0.1:0", database_url=database_url,
                                  data_dir=data_dir, admin_token=ADMIN_TOKEN,
                                  reaper_interval_seconds=3600)
    values.update(overrides)
    return BillingSettings(**values)


@dataclass
class BillingClient:
    running: RunningBilling
    billing: billing_pb2_grpc.BillingServiceStub
    admin: billing_pb2_grpc.BillingAdminServiceStub

    async def call(self, method: Any, request: Any, *,
                   metadata: tuple[tuple[str, str], ...] = ()) -> Any:
        """One RPC; a failure comes back as the ServiceError read from the wire."""
        return await rpc.call(method, request, timeout=30, metadata=metadata)

    async def admin_call(self, name: str, request: Any) -> Any:
        return await self.call(getattr(self.admin, name), request, metadata=ADMIN_METADATA)

    async def create_account(self, credits: int = 0, unlimited: bool = False,
                             name: str = "test account") -> pb.CreateAccountResponse:
        return await self.admin_call("CreateAccount", pb.CreateAccountRequest(
            name=name, credits_micro_credits=credits, unlimited=unlimited))

    async def account(self, account_id: str) -> pb.GetAccountResponse:
        return await self.admin_call("GetAccount", pb.GetAccountRequest(account_id=account_id))

    async def authenticate(self, token: str) -> pb.AuthenticateResponse:
        return await self.call(self.billing.Authenticate, pb.AuthenticateRequest(token=token))

    async def ledger_operation(self, operation: pb.LedgerOperation) -> Any:
        """The operation alone in a batch on a Ledger stream of its own: its result
        (a ReserveResponse for a reserve, ...), or the ServiceError of its CallError."""
        call = self.billing.Ledger(timeout=30)
        await call.write(pb.LedgerRequest(batch_id=1, operations=[operation]))
        await call.done_writing()
        answer = await call.read()
        assert await call.code() == grpc.StatusCode.OK
        [result] = answer.results
        kind = result.WhichOneof("result")
        if kind == "error":
            raise from_call_error(result.error)
        return getattr(result, kind)

    async def reserve(self, account_id: str, amount: int,
                      request_id: str = "req-1") -> pb.ReserveResponse:
        return await self.ledger_operation(pb.LedgerOperation(reserve=pb.ReserveRequest(
            account_id=account_id, amount_micro_credits=amount, request_id=request_id)))

    async def settle(self, hold_id: str, amount: int,
                     usage: pb.UsageRecord | None = None) -> pb.SettleResponse:
        return await self.ledger_operation(pb.LedgerOperation(settle=pb.SettleRequest(
            hold_id=hold_id, amount_micro_credits=amount, usage=usage)))

    async def release(self, hold_id: str) -> pb.ReleaseResponse:
        return await self.ledger_operation(pb.LedgerOperation(
            release=pb.ReleaseRequest(hold_id=hold_id)))


StartBilling = Callable[..., Awaitable[BillingClient]]


@pytest.fixture
async def start_billing(database_url, data_dir) -> AsyncIterator[StartBilling]:
    """Start billing servers on the test's database (several share it, like replicas)."""
    async with contextlib.AsyncExitStack() as started:

        async def _start(**overrides: Any) -> BillingClient:
            served = await started.enter_async_context(
                serving(start(make_settings(database_url, data_dir, **overrides))))
            return BillingClient(served.running,
                                 billing_pb2_grpc.BillingServiceStub(served.channel),
                                 billing_pb2_grpc.BillingAdminServiceStub(served.channel))

        yield _start


@pytest.fixture
async def client(start_billing) -> BillingClient:
    return await start_billing()


@dataclass(frozen=True)
class Books:
    """What the database says about one account, read directly with SQL."""

    balance: int
    held: int
    ledger_sum: int
    ledger_rows: int
    holds: int
    usage_records: int


async def read_books(database_url: str, account_id: str) -> Books:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            account = (await conn.execute(select(accounts.c.balance, accounts.c.held)
                                          .where(accounts.c.id == account_id))).one()

            async def scalar(query: Any) -> int:
                return int((await conn.execute(query)).scalar_one())

            return Books(
                balance=account.balance, held=account.held,
                ledger_sum=await scalar(select(func.coalesce(func.sum(ledger.c.amount), 0))
                                        .where(ledger.c.account_id == account_id)),
                ledger_rows=await scalar(select(func.count()).select_from(ledger)
                                         .where(ledger.c.account_id == account_id)),
                holds=await scalar(select(func.count()).select_from(holds)
                                   .where(holds.c.account_id == account_id)),
                usage_records=await scalar(select(func.count()).select_from(usage_records)
                                           .where(usage_records.c.account_id == account_id)))
    finally:
        await engine.dispose()


async def expect_error(awaitable: Awaitable[Any], reason: str) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        await awaitable
    assert caught.value.reason == reason, caught.value
    return caught.value
