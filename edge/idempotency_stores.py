"""Where the edge keeps idempotency keys (edge/idempotency.py), shared by every
replica and surviving an edge restart: Redis when QUANTIZED_EDGE_REDIS_URL is
set, billing's database otherwise (BillingService's *IdempotencyKey RPCs).

While the store cannot be reached, a request with an Idempotency-Key is
refused with SERVICE_UNAVAILABLE before anything is charged: answering it
without the store would give up the guarantee the caller asked for.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

import redis.asyncio as redis_asyncio
from redis.exceptions import RedisError

from quantized.billing.v1 import billing_pb2, billing_pb2_grpc
from quantized_runtime.client import call
from quantized_runtime.errors import Reason, ServiceError
from quantized_runtime.request_context import current_request_id

from edge.errors import internal_error, service_unavailable
from edge.idempotency import RUNNING, KeyState

log = logging.getLogger("quantized.edge.idempotency")


class BillingIdempotencyStore:
    def __init__(self, billing: billing_pb2_grpc.BillingServiceStub) -> None:
        self._billing = billing

    async def claim(self, account_id: str, key: str, fingerprint: bytes, owner: str,
                    running_seconds: int, timeout: float) -> KeyState:
        answer: billing_pb2.ClaimIdempotencyKeyResponse = await self._call(
            self._billing.ClaimIdempotencyKey, billing_pb2.ClaimIdempotencyKeyRequest(
                account_id=account_id, key=key, fingerprint=fingerprint, owner=owner,
                running_seconds=running_seconds), timeout)
        return KeyState(answer.claimed, answer.state, answer.fingerprint, answer.response)

    async def complete(self, account_id: str, key: str, owner: str, state: int, response: bytes,
                       retain_seconds: int, timeout: float) -> None:
        await self._call(self._billing.CompleteIdempotencyKey, billing_pb2.CompleteIdempotencyKeyRequest(
            account_id=account_id, key=key, owner=owner, state=state, response=response,
            retain_seconds=retain_seconds), timeout)

    async def release(self, account_id: str, key: str, owner: str, timeout: float) -> None:
        await self._call(self._billing.ReleaseIdempotencyKey, billing_pb2.ReleaseIdempotencyKeyRequest(
            account_id=account_id, key=key, owner=owner), timeout)

    async def close(self) -> None:
        """Nothing of its own: billing's channel belongs to the edge's Peers."""

    @staticmethod
    async def _call(method: Any, request: Any, timeout: float) -> Any:
        """A billing that is down is a 503 naming billing; anything else billing
        refuses is our own fault, a generic INTERNAL error."""
        try:
            return await call(method, request, timeout=timeout)
        except ServiceError as error:
            if error.reason is Reason.SERVICE_UNAVAILABLE:
                raise service_unavailable("billing", current_request_id.get()) from None
            log.error("idempotency key call failed", extra={"fields": {
                "reason": error.reason.value, "detail": error.message}})
            raise internal_error(current_request_id.get()) from None


# KEYS: the key's hash. ARGV: fingerprint, owner, running state, running ms.
# Returns {1} when claimed, else {0, state, fingerprint, response}.
_CLAIM_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'fingerprint', ARGV[1], 'owner', ARGV[2], 'state', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return {1}
end
local found = redis.call('HMGET', KEYS[1], 'state', 'fingerprint', 'response')
return {0, found[1], found[2], found[3] or ''}
"""

# KEYS: the key's hash. ARGV: owner, running state, final state, response, retain ms.
_COMPLETE_SCRIPT = """
local found = redis.call('HMGET', KEYS[1], 'owner', 'state')
if found[1] ~= ARGV[1] or found[2] ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], 'state', ARGV[3], 'response', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""

# KEYS: the key's hash. ARGV: owner, running state.
_RELEASE_SCRIPT = """
local found = redis.call('HMGET', KEYS[1], 'owner', 'state')
if found[1] ~= ARGV[1] or found[2] ~= ARGV[2] then
  return 0
end
return redis.call('DEL', KEYS[1])
"""

REDIS_KEY_PREFIX = "quantized:edge:idempotency:"


class RedisIdempotencyStore:
    """One hash per (account, key), expiring with the claim or the stored answer."""

    def __init__(self, client: redis_asyncio.Redis) -> None:
        self._client = client
        self._claim = client.register_script(_CLAIM_SCRIPT)
        self._complete = client.register_script(_COMPLETE_SCRIPT)
        self._release = client.register_script(_RELEASE_SCRIPT)

    @staticmethod
    def _redis_key(account_id: str, key: str) -> str:
        # Hashed: a caller's key may hold any printable character, ':' included.
        return f"{REDIS_KEY_PREFIX}{account_id}:{hashlib.sha256(key.encode()).hexdigest()}"

    async def claim(self, account_id: str, key: str, fingerprint: bytes, owner: str,
                    running_seconds: int, timeout: float) -> KeyState:
        answer = await self._run(self._claim, [self._redis_key(account_id, key)],
                                 [fingerprint, owner, RUNNING, running_seconds * 1000], timeout)
        if int(answer[0]) == 1:
            return KeyState(True, RUNNING, fingerprint)
        return KeyState(False, int(answer[1]), bytes(answer[2]), bytes(answer[3]))

    async def complete(self, account_id: str, key: str, owner: str, state: int, response: bytes,
                       retain_seconds: int, timeout: float) -> None:
        await self._run(self._complete, [self._redis_key(account_id, key)],
                        [owner, RUNNING, state, response, retain_seconds * 1000], timeout)

    async def release(self, account_id: str, key: str, owner: str, timeout: float) -> None:
        await self._run(self._release, [self._redis_key(account_id, key)], [owner, RUNNING], timeout)

    @staticmethod
    async def _run(script: Any, keys: list[str], args: list[Any], timeout: float) -> Any:
        try:
            return await asyncio.wait_for(script(keys=keys, args=args), timeout)
        except (RedisError, OSError, asyncio.TimeoutError) as error:
            log.warning("redis unavailable for idempotency keys", extra={"fields": {
                "error": type(error).__name__}})
            raise service_unavailable("idempotency store (Redis)", current_request_id.get()) from None

    async def close(self) -> None:
        await self._client.aclose()
