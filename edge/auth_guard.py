"""What keeps a flood of bad tokens away from billing's database.

A token billing refused is remembered (by digest) for a few seconds and refused
again without asking billing. Each client address may send only so many
refused tokens a minute; past that, a token from it that the edge has not
already authenticated is refused with 429 before billing is asked. Both are
this edge's own memory: billing sees at most that many refused tokens per
address, per minute, per edge replica.
"""

from __future__ import annotations

import math
import time

from quantized_runtime.errors import Reason, ServiceError
from quantized_runtime.request_context import current_request_id

from edge.cache import MISSING, TtlCache
from edge.errors import RETRY_AFTER_METADATA_KEY

FAILURE_WINDOW_SECONDS = 60.0


class AuthFailureGuard:
    def __init__(self, refusal_ttl_seconds: float, failures_per_minute_per_address: int,
                 max_entries: int) -> None:
        self._refusals: TtlCache[ServiceError] = TtlCache(refusal_ttl_seconds, max_entries)
        self._failures_per_window = failures_per_minute_per_address
        # client address -> (refused tokens counted, monotonic time the window ends)
        self._failures: TtlCache[tuple[int, float]] = TtlCache(FAILURE_WINDOW_SECONDS, max_entries)

    def check(self, token_digest: bytes, client_address: str) -> None:
        """Before billing is asked about a token: raise the remembered refusal, or
        RATE_LIMITED when the address has used up its refused tokens."""
        refusal = self._refusals.get(token_digest)
        if refusal is not MISSING:
            raise ServiceError(refusal.reason, refusal.message)
        if not self._failures_per_window:
            return
        window = self._failures.get(client_address)
        now = time.monotonic()
        if window is not MISSING and window[1] > now and window[0] >= self._failures_per_window:
            wait = max(1, math.ceil(window[1] - now))
            raise ServiceError(
                Reason.RATE_LIMITED,
                f"too many failed authentications from this address; retry after {wait} s "
                f"(request id {current_request_id.get()})",
                metadata={RETRY_AFTER_METADATA_KEY: str(wait)})

    def refused(self, token_digest: bytes, client_address: str, refusal: ServiceError) -> None:
        """Billing refused the token."""
        self._refusals.put(token_digest, refusal)
        window = self._failures.get(client_address)
        now = time.monotonic()
        if window is MISSING or window[1] <= now:
            window = (0, now + FAILURE_WINDOW_SECONDS)
        self._failures.put(client_address, (window[0] + 1, window[1]))
