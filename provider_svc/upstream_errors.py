"""Upstream failures as ServiceErrors: named provider and cause, never a secret.

- `unavailable`: timeouts, throttling, upstream 5xx, credential and account
  problems (edge: 503). `retryable` marks the ones worth another attempt
  (429 and 5xx only).
- `rejected`: the upstream refused a parameter (edge: 400), carrying the
  upstream's own message.
"""

from __future__ import annotations

from collections.abc import Iterable

from quantized_runtime.errors import Reason, ServiceError

_MAX_UPSTREAM_MESSAGE = 500


class UpstreamError(ServiceError):
    def __init__(self, reason: str, message: str, *, provider: str, retryable: bool = False) -> None:
        super().__init__(reason, message, metadata={"provider": provider})
        self.provider = provider
        self.retryable = retryable


def unavailable(provider: str, cause: str, *, retryable: bool = False) -> UpstreamError:
    return UpstreamError(Reason.UPSTREAM_UNAVAILABLE, f"{provider}: {cause}",
                         provider=provider, retryable=retryable)


def rejected(provider: str, upstream_message: str, secrets: Iterable[str] = ()) -> UpstreamError:
    message = redact(upstream_message, secrets).strip()[:_MAX_UPSTREAM_MESSAGE] or "request rejected"
    return UpstreamError(Reason.UPSTREAM_REJECTED, f"{provider}: upstream rejected the request: {message}",
                         provider=provider)


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
