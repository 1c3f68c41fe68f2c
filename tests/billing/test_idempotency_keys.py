"""Billing keeps the edge's idempotency keys (when the edge has no Redis): one
claim per (account, key) however many attempts race for it, only the owner
completes or releases it, a running claim is taken over once it expires, and
expired keys are forgotten. On SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
import hashlib

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from billing_svc.storage.schema import idempotency_keys
from quantized.billing.v1 import billing_pb2 as pb

from .conftest import BillingClient, StartBilling, expect_error

FINGERPRINT = hashlib.sha256(b"request one").digest()
OTHER_FINGERPRINT = hashlib.sha256(b"request two").digest()
DAY_SECONDS = 86_400


async def _claim(client: BillingClient, account_id: str, owner: str, key: str = "key-1",
                 fingerprint: bytes = FINGERPRINT, running_seconds: int = 60) -> pb.ClaimIdempotencyKeyResponse:
    return await client.call(client.billing.ClaimIdempotencyKey, pb.ClaimIdempotencyKeyRequest(
        account_id=account_id, key=key, fingerprint=fingerprint, owner=owner,
        running_seconds=running_seconds))


async def _complete(client: BillingClient, account_id: str, owner: str, response: bytes = b"answer",
                    state: int = pb.IDEMPOTENCY_STATE_COMPLETED, key: str = "key-1") -> bool:
    answer = await client.call(client.billing.CompleteIdempotencyKey, pb.CompleteIdempotencyKeyRequest(
        account_id=account_id, key=key, owner=owner, state=state, response=response,
        retain_seconds=DAY_SECONDS))
    return answer.completed


async def _release(client: BillingClient, account_id: str, owner: str, key: str = "key-1") -> bool:
    answer = await client.call(client.billing.ReleaseIdempotencyKey, pb.ReleaseIdempotencyKeyRequest(
        account_id=account_id, key=key, owner=owner))
    return answer.released


async def _rows(database_url: str) -> int:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(idempotency_keys))).scalar_one())
    finally:
        await engine.dispose()


async def test_one_of_many_racing_attempts_claims_a_key_and_the_rest_see_it_running(
        start_billing: StartBilling) -> None:
    first, second = await start_billing(), await start_billing()
    account_id = (await first.create_account(credits=1)).account.account_id
    answers = await asyncio.gather(*(_claim((first, second)[index % 2], account_id, f"req-{index}")
                                     for index in range(32)))
    assert sum(answer.claimed for answer in answers) == 1
    for answer in answers:
        assert answer.state == pb.IDEMPOTENCY_STATE_RUNNING
        assert answer.fingerprint == FINGERPRINT


async def test_a_completed_key_answers_with_its_response_and_only_its_owner_completes_it(
        client: BillingClient) -> None:
    account_id = (await client.create_account(credits=1)).account.account_id
    assert (await _claim(client, account_id, "req-owner")).claimed
    assert not await _complete(client, account_id, "req-stranger")
    assert not await _release(client, account_id, "req-stranger")
    assert await _complete(client, account_id, "req-owner", b"the stored answer")
    assert not await _release(client, account_id, "req-owner")

    repeat = await _claim(client, account_id, "req-retry", fingerprint=OTHER_FINGERPRINT)
    assert not repeat.claimed
    assert (repeat.state, repeat.fingerprint, repeat.response) == (
        pb.IDEMPOTENCY_STATE_COMPLETED, FINGERPRINT, b"the stored answer")


async def test_a_released_key_is_free_again_and_keys_are_per_account(client: BillingClient) -> None:
    account_id = (await client.create_account(credits=1)).account.account_id
    other_account_id = (await client.create_account(credits=1)).account.account_id
    assert (await _claim(client, account_id, "req-1")).claimed
    assert (await _claim(client, other_account_id, "req-2")).claimed
    assert await _release(client, account_id, "req-1")
    assert (await _claim(client, account_id, "req-3")).claimed


async def test_unreplayable_outcomes_are_kept_without_a_response(client: BillingClient) -> None:
    account_id = (await client.create_account(credits=1)).account.account_id
    for key, state in (("too-large", pb.IDEMPOTENCY_STATE_TOO_LARGE),
                       ("failed", pb.IDEMPOTENCY_STATE_FAILED_AFTER_GENERATION)):
        assert (await _claim(client, account_id, f"req-{key}", key=key)).claimed
        assert await _complete(client, account_id, f"req-{key}", b"", state=state, key=key)
        repeat = await _claim(client, account_id, "req-retry", key=key)
        assert (repeat.claimed, repeat.state, repeat.response) == (False, state, b"")


async def test_an_expired_running_claim_is_taken_over_and_expired_keys_are_forgotten(
        client: BillingClient, database_url) -> None:
    account_id = (await client.create_account(credits=1)).account.account_id
    assert (await _claim(client, account_id, "req-died", running_seconds=1)).claimed
    assert not (await _claim(client, account_id, "req-early")).claimed
    await asyncio.sleep(1.1)
    assert (await _claim(client, account_id, "req-successor", running_seconds=1)).claimed
    assert not await _complete(client, account_id, "req-died")
    assert await _rows(database_url) == 1
    await asyncio.sleep(1.1)
    assert await client.running.idempotency.forget_expired() == 1
    assert await _rows(database_url) == 0


async def test_malformed_claims_are_refused(client: BillingClient) -> None:
    account_id = (await client.create_account(credits=1)).account.account_id
    await expect_error(_claim(client, account_id, "req-1", key="k" * 256), "INVALID_REQUEST")
    await expect_error(_claim(client, account_id, "req-1", fingerprint=b"short"), "INVALID_REQUEST")
    await expect_error(_claim(client, account_id, "req-1", running_seconds=0), "INVALID_REQUEST")
    assert (await _claim(client, account_id, "req-1")).claimed
    await expect_error(_complete(client, account_id, "req-1", b""), "INVALID_REQUEST")
    await expect_error(_complete(client, account_id, "req-1", state=pb.IDEMPOTENCY_STATE_RUNNING),
                       "INVALID_REQUEST")
