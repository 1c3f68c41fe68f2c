"""PostgreSQL stopped under a running billing (issue 15, items 4 and 5): its gRPC
health turns NOT_SERVING, every call that needs the database answers
SERVICE_UNAVAILABLE at once (unary calls as their status, Ledger operations as
the CallError of their batch), never INTERNAL; once PostgreSQL is back billing
serves again by itself, without a restart, and the books are exact."""

from __future__ import annotations

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from billing_svc.main import start
from billing_svc.servicer import SERVICE_NAMES
from quantized.billing.v1 import billing_pb2 as pb
from quantized.billing.v1 import billing_pb2_grpc
from quantized_runtime.errors import Reason, from_call_error
from tests.billing.conftest import BillingClient, expect_error, make_settings, read_books
from tests.harness import serving
from tests.polling import eventually_true

pytestmark = pytest.mark.postgres

OPENING = 1_000_000
# A call that hangs instead of failing fails the test at this bound.
CALL_BOUND_SECONDS = 10
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthStatuses:
    """The last status billing reported for each of its health names."""

    def __init__(self, stub: health_pb2_grpc.HealthStub) -> None:
        self._stub = stub
        self.statuses: dict[str, int] = {}

    async def refresh(self) -> dict[str, int]:
        for name in ("", *SERVICE_NAMES):
            reply = await self._stub.Check(health_pb2.HealthCheckRequest(service=name),
                                           timeout=CALL_BOUND_SECONDS)
            self.statuses[name] = reply.status
        return self.statuses


async def _until_all(health: HealthStatuses, status: int) -> None:
    async def all_have_it() -> bool:
        return set((await health.refresh()).values()) == {status}
    await eventually_true(all_have_it)


async def _ledger_batch(client: BillingClient, batch_id: int,
                        *operations: pb.LedgerOperation) -> pb.LedgerResponse:
    stream = client.billing.Ledger(timeout=CALL_BOUND_SECONDS)
    await stream.write(pb.LedgerRequest(batch_id=batch_id, operations=operations))
    reply = await stream.read()
    await stream.done_writing()
    return reply


async def test_billing_answers_service_unavailable_while_postgres_is_down_and_heals(
        throwaway_postgres, data_dir):
    url = await throwaway_postgres.create_database("billing")
    async with serving(start(make_settings(url, data_dir))) as served:
        client = BillingClient(served.running, billing_pb2_grpc.BillingServiceStub(served.channel),
                               billing_pb2_grpc.BillingAdminServiceStub(served.channel))
        health = HealthStatuses(health_pb2_grpc.HealthStub(served.channel))
        account = await client.create_account(OPENING)
        account_id = account.account.account_id
        assert (await client.authenticate(account.api_key)).account_id == account_id
        before = await client.reserve(account_id, 100, "req-before")
        await client.settle(before.hold_id, 60)
        assert set((await health.refresh()).values()) == {SERVING}

        await throwaway_postgres.stop()

        await _until_all(health, NOT_SERVING)
        await expect_error(client.authenticate(account.api_key), Reason.SERVICE_UNAVAILABLE)
        await expect_error(client.reserve(account_id, 100, "req-during"), Reason.SERVICE_UNAVAILABLE)
        await expect_error(client.account(account_id), Reason.SERVICE_UNAVAILABLE)
        reply = await _ledger_batch(client, 1, pb.LedgerOperation(reserve=pb.ReserveRequest(
            account_id=account_id, amount_micro_credits=100, request_id="req-batch")),
            pb.LedgerOperation(release=pb.ReleaseRequest(hold_id="hold-unknown")))
        reasons = [from_call_error(result.error).reason for result in reply.results]
        assert reasons == [Reason.SERVICE_UNAVAILABLE, Reason.SERVICE_UNAVAILABLE]

        await throwaway_postgres.start()

        await _until_all(health, SERVING)
        # The pools reconnect by themselves: no restart.
        assert (await client.authenticate(account.api_key)).account_id == account_id
        after = await client.reserve(account_id, 100, "req-after")
        await client.settle(after.hold_id, 40)
        reply = await _ledger_batch(client, 2, pb.LedgerOperation(reserve=pb.ReserveRequest(
            account_id=account_id, amount_micro_credits=100, request_id="req-batch")))
        assert reply.results[0].HasField("reserve")
        await client.release(reply.results[0].reserve.hold_id)

        books = await read_books(url, account_id)
        assert books.balance == books.ledger_sum == OPENING - 60 - 40
        assert books.held == 0
