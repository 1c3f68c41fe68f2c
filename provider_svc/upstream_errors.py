"""Upstream failures as ServiceErrors: named provider and cause, never a secret.

- `unavailable`: timeouts, throttling, upstream 5xx, credential and account
  problems (edge: 503). `retryable` marks the ones worth another attempt
  (429 and 5xx only).
- `rejected`: the upstream refused a parameter (edge: 400).

The caller's message names the upstream and the request id, never the
upstream's own text: that text can carry our account's details or reflect what
another caller sent, so it goes to this service's log only (redacted), under the
same request id.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from quantized_runtime.errors import Reason, ServiceError
from quantized_runtime.request_context import current_request_id

log = logging.getLogger("quantized.provider.upstream")

_MAX_UPSTREAM_MESSAGE = 500


class UpstreamError(ServiceError):
    def __init__(self, reason: str, message: str, *, provider: str, retryable: bool = False) -> None:
        super().__init__(reason, message, metadata={"provider": provider})
        self.provider = provider
        self.retryable = retryable


def unavailable(provider: str, cause: str, *, retryable: bool = False,
                upstream_text: str | None = None) -> UpstreamError:
    """`cause` is our own words, sent to the caller; `upstream_text` is logged only."""
    if upstream_text is not None:
        _log_upstream_text(provider, "upstream failed", upstream_text, ())
    return UpstreamError(Reason.UPSTREAM_UNAVAILABLE, f"{provider}: {cause}",
                         provider=provider, retryable=retryable)


def rejected(provider: str, upstream_message: str, secrets: Iterable[str] = ()) -> UpstreamError:
    _log_upstream_text(provider, "upstream rejected the request", upstream_message, secrets)
    return UpstreamError(
        Reason.UPSTREAM_REJECTED,
        f"the {provider} upstream rejected the request (request id {current_request_id.get()})",
        provider=provider)


def _log_upstream_text(provider: str, event: str, text: str, secrets: Iterable[str]) -> None:
    detail = redact(text, secrets).strip()[:_MAX_UPSTREAM_MESSAGE]
    log.warning(event, extra={"fields": {"provider": provider, "upstream_message": detail}})


def model_not_served(provider: str, model_id: str) -> ServiceError:
    """A catalog row that routes a model to an adapter that has no body for it."""
    return ServiceError(Reason.PROVIDER_NOT_OFFERED, f"{provider}: model {model_id!r} is not served by this provider")


def no_credentials(provider: str) -> UpstreamError:
    return unavailable(provider, "no credentials configured")


def timed_out(provider: str) -> UpstreamError:
    return unavailable(provider, "upstream timed out")


def redact(text: str, secrets: Iterable[str]) -> str:
    """Remove every configured secret (and its 8-character edges) from upstream text."""
    for secret in secrets:
        if secret and len(secret) >= 8:
            text = text.replace(secret, "[redacted]")
            text = text.replace(secret[:8], "[redacted]").replace(secret[-8:], "[redacted]")
    return text
