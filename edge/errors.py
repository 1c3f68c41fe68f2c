"""The one table from error reason to HTTP status and OpenAI error type, and the
OpenAI error body `{"error": {"message", "type", "param", "code"}}`.

Two kinds of reason share the table: the contract's `Reason`, which gRPC callers
see too, and `HttpReason`, rejections of the HTTP transport itself (a body that
is not JSON, a wrong method), which no gRPC caller can make.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass

from quantized_runtime.errors import Reason, ServiceError


# An error's own wait, in whole seconds, for its Retry-After (HTTP) or ErrorInfo metadata (gRPC).
RETRY_AFTER_METADATA_KEY = "retry_after_seconds"


class HttpReason(enum.StrEnum):
    INVALID_JSON = "INVALID_JSON"
    CLIENT_DISCONNECTED = "CLIENT_DISCONNECTED"
    NOT_AVAILABLE_IN_THIS_RELEASE = "NOT_AVAILABLE_IN_THIS_RELEASE"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    REQUEST_TOO_LARGE = "REQUEST_TOO_LARGE"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    INVALID_QUERY_PARAMETER = "INVALID_QUERY_PARAMETER"


@dataclass(frozen=True)
class HttpError:
    status: int
    type: str
    # Seconds for a Retry-After header: set where trying again soon can succeed.
    retry_after: int | None = None


HTTP_ERROR_BY_REASON: dict[Reason | HttpReason, HttpError] = {
    Reason.INVALID_REQUEST: HttpError(422, "invalid_request_error"),
    Reason.MODEL_NOT_FOUND: HttpError(404, "invalid_request_error"),
    Reason.MODALITY_MISMATCH: HttpError(400, "invalid_request_error"),
    Reason.PROVIDER_NOT_OFFERED: HttpError(400, "invalid_request_error"),
    Reason.NO_ACTIVE_PROVIDERS: HttpError(400, "invalid_request_error"),
    Reason.UNAUTHENTICATED: HttpError(401, "authentication_error"),
    Reason.INSUFFICIENT_CREDITS: HttpError(402, "insufficient_credits"),
    Reason.UPSTREAM_UNAVAILABLE: HttpError(503, "upstream_unavailable"),
    Reason.UPSTREAM_REJECTED: HttpError(400, "invalid_request_error"),
    Reason.NOT_FOUND: HttpError(404, "invalid_request_error"),
    Reason.HOLD_CLOSED: HttpError(409, "conflict_error"),
    Reason.PERMISSION_DENIED: HttpError(403, "permission_error"),
    Reason.INTERNAL: HttpError(500, "server_error"),
    Reason.ROUTE_NOT_FOUND: HttpError(404, "invalid_request_error"),
    # One of our services is down or restarting: a supervisor or another replica
    # brings it back within about a second.
    Reason.SERVICE_UNAVAILABLE: HttpError(503, "service_unavailable", retry_after=1),
    # The error's own `retry_after_seconds` (when the window frees a slot) wins over this.
    Reason.RATE_LIMITED: HttpError(429, "rate_limit_error", retry_after=1),
    # Stripe's type for the same refusals.
    Reason.IDEMPOTENCY_CONFLICT: HttpError(409, "idempotency_error"),
    HttpReason.INVALID_JSON: HttpError(400, "invalid_request_error"),
    # Nobody is left to read it; not a server failure either.
    HttpReason.CLIENT_DISCONNECTED: HttpError(400, "invalid_request_error"),
    HttpReason.NOT_AVAILABLE_IN_THIS_RELEASE: HttpError(404, "invalid_request_error"),
    HttpReason.METHOD_NOT_ALLOWED: HttpError(405, "invalid_request_error"),
    HttpReason.REQUEST_TOO_LARGE: HttpError(413, "invalid_request_error"),
    HttpReason.UNSUPPORTED_MEDIA_TYPE: HttpError(415, "invalid_request_error"),
    # A query string the route refuses (GET /v1/usage); `param` names the parameter.
    HttpReason.INVALID_QUERY_PARAMETER: HttpError(400, "invalid_request_error"),
}

# Reasons a peer may hand back to the caller unchanged. Anything else from a peer
# (a closed hold, a missing admin token, an unimplemented method) is our own fault
# and becomes a generic INTERNAL error.
CALLER_FACING_REASONS = frozenset({
    Reason.INVALID_REQUEST,
    Reason.MODEL_NOT_FOUND,
    Reason.MODALITY_MISMATCH,
    Reason.PROVIDER_NOT_OFFERED,
    Reason.NO_ACTIVE_PROVIDERS,
    Reason.UNAUTHENTICATED,
    Reason.INSUFFICIENT_CREDITS,
    Reason.UPSTREAM_UNAVAILABLE,
    Reason.UPSTREAM_REJECTED,
})


class HttpRejection(Exception):
    """The HTTP transport refused the request before the flow saw it."""

    def __init__(self, reason: HttpReason, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.param = param


def internal_error(request_id: str) -> ServiceError:
    return ServiceError(Reason.INTERNAL, f"internal error (request id {request_id})")


def service_unavailable(service: str, request_id: str) -> ServiceError:
    return ServiceError(Reason.SERVICE_UNAVAILABLE,
                        f"the {service} service is unavailable; nothing was charged, retry shortly "
                        f"(request id {request_id})")


def error_response(reason: Reason | HttpReason, message: str, param: str | None = None) -> tuple[int, bytes]:
    """The HTTP status and OpenAI error body for a reason; `code` is the reason in lower case."""
    mapped = HTTP_ERROR_BY_REASON[reason]
    body = json.dumps(
        {"error": {"message": message, "type": mapped.type, "param": param, "code": reason.value.lower()}},
        separators=(",", ":"),
    ).encode()
    return mapped.status, body


def service_error_response(error: ServiceError) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """The HTTP status, body and extra headers (Retry-After) for a ServiceError."""
    status, body = error_response(error.reason, error.message, error.field)
    retry_after = error.metadata.get(RETRY_AFTER_METADATA_KEY) or HTTP_ERROR_BY_REASON[error.reason].retry_after
    headers = [] if retry_after is None else [(b"retry-after", str(retry_after).encode())]
    return status, body, headers
