"""Idempotency keys kept for the edge (docs/billing.md, "Idempotency keys"):
the checks on what the edge sends, and the clock. What a key means to a caller
(fingerprints, replays, the 409s) is the edge's (edge/idempotency.py); billing
only keeps the rows, atomically. Nothing here knows gRPC."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from billing_svc.domain import MAX_REQUEST_ID_LENGTH
from billing_svc.storage.idempotency_store import COMPLETED, FINAL_STATES, IdempotencyStore, KeyRecord
from quantized_runtime.clock import utc_now
from quantized_runtime.errors import Reason, ServiceError

log = logging.getLogger("quantized.billing.idempotency")

MAX_KEY_LENGTH = 255
FINGERPRINT_BYTES = 32
# Neither a claim nor a stored answer is kept longer than a day.
MAX_KEEP_SECONDS = 86_400


def _invalid(field: str, message: str) -> ServiceError:
    return ServiceError(Reason.INVALID_REQUEST, message, field=field)


def _checked_key(account_id: str, key: str, owner: str) -> None:
    if not account_id.strip():
        raise _invalid("account_id", "account_id is required")
    if not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise _invalid("key", f"key must be 1 to {MAX_KEY_LENGTH} characters")
    if not owner.strip() or len(owner) > MAX_REQUEST_ID_LENGTH:
        raise _invalid("owner", f"owner must be 1 to {MAX_REQUEST_ID_LENGTH} characters")


def _checked_seconds(seconds: int, field: str) -> timedelta:
    if not 1 <= seconds <= MAX_KEEP_SECONDS:
        raise _invalid(field, f"{field} must be 1 to {MAX_KEEP_SECONDS}, got {seconds}")
    return timedelta(seconds=seconds)


class IdempotencyKeys:
    def __init__(self, store: IdempotencyStore, clock: Callable[[], datetime] = utc_now) -> None:
        self._store = store
        self._clock = clock

    async def claim(self, account_id: str, key: str, fingerprint: bytes, owner: str,
                    running_seconds: int) -> KeyRecord:
        _checked_key(account_id, key, owner)
        if len(fingerprint) != FINGERPRINT_BYTES:
            raise _invalid("fingerprint", f"fingerprint must be {FINGERPRINT_BYTES} bytes (SHA-256)")
        running_for = _checked_seconds(running_seconds, "running_seconds")
        now = self._clock()
        return await self._store.claim(account_id, key, fingerprint, owner, now, now + running_for)

    async def complete(self, account_id: str, key: str, owner: str, state: str, response: bytes | None,
                       retain_seconds: int) -> bool:
        _checked_key(account_id, key, owner)
        if state not in FINAL_STATES:
            raise _invalid("state", f"state must be one of {', '.join(sorted(FINAL_STATES))}")
        if (state == COMPLETED) != bool(response):
            raise _invalid("response", "a completed key needs its response, and only a completed one has one")
        retain_for = _checked_seconds(retain_seconds, "retain_seconds")
        return await self._store.complete(account_id, key, owner, state, response, self._clock() + retain_for)

    async def release(self, account_id: str, key: str, owner: str) -> bool:
        _checked_key(account_id, key, owner)
        return await self._store.release(account_id, key, owner)

    async def forget_expired(self) -> int:
        forgotten = await self._store.forget_expired(self._clock())
        if forgotten:
            log.info("expired idempotency keys forgotten", extra={"fields": {"keys": forgotten}})
        return forgotten
