"""Background task that returns the credits of holds nobody settled in time
(a crashed or disconnected edge), so no credits stay stranded, and forgets
idempotency keys past their expiry."""

from __future__ import annotations

import asyncio
import logging

from billing_svc.idempotency import IdempotencyKeys
from billing_svc.metrics import holds_open
from billing_svc.service import Billing

log = logging.getLogger("quantized.billing.reaper")

BATCH_SIZE = 500


async def reap_forever(billing: Billing, idempotency: IdempotencyKeys, interval_seconds: float) -> None:
    """Each round also counts the open holds, for the metrics."""
    while True:
        try:
            holds_open(await billing.open_holds())
        except Exception:
            log.exception("counting open holds failed")
        await asyncio.sleep(interval_seconds)
        try:
            await reap_all_due(billing)
            await idempotency.forget_expired()
        except Exception:
            # A database hiccup must not end the task; the next round retries.
            log.exception("reaping expired holds and keys failed")


async def reap_all_due(billing: Billing) -> int:
    """Expire every hold that is due, a batch per transaction."""
    total = 0
    while True:
        count = await billing.expire_due_holds(BATCH_SIZE)
        total += count
        if count < BATCH_SIZE:
            break
    if total:
        log.info("expired holds released", extra={"fields": {"holds": total}})
    return total
