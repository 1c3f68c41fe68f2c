"""Billing's metrics: ledger batches, their operations and commits, holds open
and expired (late charges: tests/billing/test_leases.py)."""

from __future__ import annotations

import grpc
from prometheus_client import REGISTRY

from billing_svc.reaper import reap_all_due
from quantized.billing.v1 import billing_pb2 as pb
from tests.polling import eventually

from .conftest import StartBilling
from .test_hold_expiry import SHORT_TTL_SECONDS, wait_until_past


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def ledger_counts() -> dict[str, float]:
    return {
        "batches": sample("quantized_billing_ledger_batch_operations_count"),
        "operations": sample("quantized_billing_ledger_batch_operations_sum"),
        "commits": sample("quantized_billing_ledger_commit_duration_seconds_count"),
        "reserved": sample("quantized_billing_ledger_operations_total", operation="reserve", outcome="OK"),
        "refused": sample("quantized_billing_ledger_operations_total", operation="reserve",
                          outcome="INSUFFICIENT_CREDITS"),
    }


async def test_a_batch_counts_its_size_its_commit_and_each_operation_by_outcome(
        start_billing: StartBilling) -> None:
    client = await start_billing()
    account_id = (await client.create_account(credits=1_000)).account.account_id
    before = ledger_counts()
    call = client.billing.Ledger(timeout=30)
    await call.write(pb.LedgerRequest(batch_id=1, operations=[
        pb.LedgerOperation(reserve=pb.ReserveRequest(account_id=account_id, amount_micro_credits=600,
                                                     request_id="req-fits")),
        pb.LedgerOperation(reserve=pb.ReserveRequest(account_id=account_id, amount_micro_credits=600,
                                                     request_id="req-short")),
    ]))
    await call.done_writing()
    answer = await call.read()
    assert await call.code() == grpc.StatusCode.OK
    assert [result.WhichOneof("result") for result in answer.results] == ["reserve", "error"]
    after = ledger_counts()
    assert {name: after[name] - before[name] for name in before} == {
        "batches": 1, "operations": 2, "commits": 1, "reserved": 1, "refused": 1}


async def test_holds_open_and_expired_are_counted(start_billing: StartBilling) -> None:
    client = await start_billing(hold_ttl_seconds=SHORT_TTL_SECONDS, reaper_interval_seconds=0.05)
    billing = client.running.billing
    account_id = (await client.create_account(credits=1_000_000)).account.account_id
    held = await client.reserve(account_id, 300_000, "req-abandoned")
    assert await billing.open_holds() == {"request": 1}
    await eventually(lambda: sample("quantized_billing_holds_open", kind="request") >= 1)
    expired_before = sample("quantized_billing_holds_expired_total")
    await wait_until_past(held.expires_at)
    await reap_all_due(billing)
    await eventually(lambda: sample("quantized_billing_holds_expired_total") - expired_before == 1)
    assert await billing.open_holds() == {}
    await eventually(lambda: sample("quantized_billing_holds_open", kind="request") == 0)
