"""Idempotency-Key (docs/api.md, "Idempotency"): a retry of a generation is
answered once and charged once.

The first request with a key claims it in a store every edge replica shares
(billing's database, or Redis when the edge has one), with the fingerprint of
its validated request; it then runs and stores its answer, the public
GenerateResponse, for REPLAY_RETENTION_SECONDS. A repeat from the same account
with the same fingerprint gets that answer again without reaching admission,
the upstream or the ledger; with another fingerprint it is IDEMPOTENCY_CONFLICT.
A repeat that finds the first still running waits for it, polling the store,
within its own request budget, and is IDEMPOTENCY_CONFLICT when the budget runs
out first.

A request that fails before the upstream produced images releases its key, so a
retry runs afresh; one that fails after (its charge could not be confirmed)
keeps the key as FAILED_AFTER_GENERATION, and a retry is refused rather than
risk a second charge. An answer over the size bound is not stored (TOO_LARGE):
the request itself succeeds, a replay is refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from quantized.billing.v1 import billing_pb2
from quantized.images.v1 import images_pb2
from quantized_runtime.errors import Reason, ServiceError
from quantized_runtime.request_context import current_request_id

from edge.render import Outcome, generation_proto, replayed_outcome

if TYPE_CHECKING:
    from edge.flow import RequestBudget

log = logging.getLogger("quantized.edge.idempotency")

REPLAY_RETENTION_SECONDS = 24 * 3600
# A repeat polls the store for the first request's answer, backing off to the cap.
FIRST_POLL_SECONDS = 0.01
MAX_POLL_SECONDS = 0.25

RUNNING = billing_pb2.IDEMPOTENCY_STATE_RUNNING
COMPLETED = billing_pb2.IDEMPOTENCY_STATE_COMPLETED
TOO_LARGE = billing_pb2.IDEMPOTENCY_STATE_TOO_LARGE
FAILED_AFTER_GENERATION = billing_pb2.IDEMPOTENCY_STATE_FAILED_AFTER_GENERATION


@dataclass(frozen=True)
class KeyState:
    """A key as a claim found it; `claimed` when that claim took it."""

    claimed: bool
    state: int
    fingerprint: bytes
    response: bytes = b""


class IdempotencyStore(Protocol):
    """Shared by every edge replica. Each method raises a ServiceError
    (SERVICE_UNAVAILABLE when the store cannot be reached)."""

    async def claim(self, account_id: str, key: str, fingerprint: bytes, owner: str,
                    running_seconds: int, timeout: float) -> KeyState:
        """Take the key for `owner` if it is free (or its running claim expired),
        else tell how it stands."""
        ...

    async def complete(self, account_id: str, key: str, owner: str, state: int, response: bytes,
                       retain_seconds: int, timeout: float) -> None:
        """Owner only: the key's final state (and answer) for `retain_seconds`."""
        ...

    async def release(self, account_id: str, key: str, owner: str, timeout: float) -> None:
        """Owner only: the key is free again."""
        ...

    async def close(self) -> None: ...


class Progress:
    """How far a request got; the flow marks the upstream's answer."""

    __slots__ = ("images_produced",)

    def __init__(self) -> None:
        self.images_produced = False


def request_fingerprint(request: images_pb2.GenerateRequest, provider_override: str) -> bytes:
    """SHA-256 of the validated request (defaults filled in, so JSON spelling, field
    order and omitted defaults do not matter) without its key, and of the pinned provider."""
    unkeyed = images_pb2.GenerateRequest()
    unkeyed.CopyFrom(request)
    unkeyed.ClearField("idempotency_key")
    digest = hashlib.sha256(unkeyed.SerializeToString(deterministic=True))
    digest.update(b"\x00provider:" + provider_override.encode())
    return digest.digest()


def _conflict(message: str) -> ServiceError:
    return ServiceError(Reason.IDEMPOTENCY_CONFLICT,
                        f"{message}; nothing was charged for this request (request id {current_request_id.get()})",
                        field="idempotency_key")


_UNREPLAYABLE = {
    TOO_LARGE: "the first request with this Idempotency-Key succeeded, but its response was too large "
               "to store for replay: use a new key for a new request",
    FAILED_AFTER_GENERATION: "the first request with this Idempotency-Key failed after its images were "
                             "generated, and it may have been charged: it is not run again under this key "
                             "(check your usage, then use a new key)",
}


class Idempotency:
    def __init__(self, store: IdempotencyStore, max_stored_bytes: int, running_seconds: int,
                 call_timeout_seconds: float) -> None:
        self._store = store
        self._max_stored_bytes = max_stored_bytes
        self._running_seconds = running_seconds
        self._call_timeout = call_timeout_seconds
        # Key bookkeeping of cancelled requests, finishing in the background.
        self._background: set[asyncio.Task[None]] = set()

    async def run(self, account_id: str, request: images_pb2.GenerateRequest, provider_override: str,
                  budget: RequestBudget, attempt: Callable[[Progress], Awaitable[Outcome]]) -> Outcome:
        """The first answer under the request's key, or `attempt`'s once this request holds the key."""
        key = request.idempotency_key
        fingerprint = request_fingerprint(request, provider_override)
        owner = current_request_id.get()
        found = await self._claim_or_wait(account_id, key, fingerprint, owner, budget)
        if not found.claimed:
            if found.state == COMPLETED:
                return replayed_outcome(images_pb2.GenerateResponse.FromString(found.response))
            raise _conflict(_UNREPLAYABLE.get(found.state, "this Idempotency-Key cannot be replayed"))
        progress = Progress()
        try:
            outcome = await attempt(progress)
        except asyncio.CancelledError:
            task = asyncio.get_running_loop().create_task(self._after_failure(account_id, key, owner, progress))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            raise
        except Exception:
            await self._after_failure(account_id, key, owner, progress)
            raise
        response = generation_proto(outcome, owner).SerializeToString()
        if len(response) > self._max_stored_bytes:
            await self._finish(account_id, key, owner, TOO_LARGE, b"")
        else:
            await self._finish(account_id, key, owner, COMPLETED, response)
        return outcome

    async def _claim_or_wait(self, account_id: str, key: str, fingerprint: bytes, owner: str,
                             budget: RequestBudget) -> KeyState:
        delay = FIRST_POLL_SECONDS
        while True:
            found = await self._store.claim(account_id, key, fingerprint, owner, self._running_seconds,
                                            budget.timeout(self._call_timeout))
            if found.claimed:
                return found
            if found.fingerprint != fingerprint:
                raise _conflict("this Idempotency-Key was already used with a different request "
                                "(body or pinned provider); use a new key for a new request")
            if found.state != RUNNING:
                return found
            if budget.remaining() <= delay:
                raise _conflict("the first request with this Idempotency-Key is still running; "
                                "retry later to get its response")
            await asyncio.sleep(delay)
            delay = min(2 * delay, MAX_POLL_SECONDS)

    async def _after_failure(self, account_id: str, key: str, owner: str, progress: Progress) -> None:
        if progress.images_produced:
            await self._finish(account_id, key, owner, FAILED_AFTER_GENERATION, b"")
            return
        try:
            await self._store.release(account_id, key, owner, self._call_timeout)
        except ServiceError as error:
            # The claim frees itself after running_seconds.
            log.warning("idempotency key not released", extra={"fields": {"detail": error.message}})

    async def _finish(self, account_id: str, key: str, owner: str, state: int, response: bytes) -> None:
        """The request's own answer does not depend on this: a key left running
        frees itself after running_seconds, and a retry after that runs again."""
        try:
            await self._store.complete(account_id, key, owner, state, response, REPLAY_RETENTION_SECONDS,
                                       self._call_timeout)
        except ServiceError as error:
            log.warning("idempotency key not completed", extra={"fields": {
                "state": billing_pb2.IdempotencyState.Name(state), "detail": error.message}})

    async def close(self) -> None:
        """Let the bookkeeping of cancelled requests finish, then close the store."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self._store.close()
