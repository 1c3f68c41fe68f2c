"""The one table from error reason to HTTP status and OpenAI error type, and the
OpenAI error body `{"error": {"message", "type", "param", "code"}}`."""

from __future__ import annotations

import json
from dataclasses import dataclass

from quantized_runtime.errors import Reason, ServiceError


@dataclass(frozen=True)
class HttpError:
    status: int
    type: str
    # Seconds for a Retry-After header: set where trying again soon can succeed.
    retry_after: int | None = None


HTTP_ERROR_BY_REASON: dict[Reason, HttpError] = {
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


def internal_error(request_id: str) -> ServiceError:
    return ServiceError(Reason.INTERNAL, f"internal error (request id {request_id})")


def service_unavailable(service: str, request_id: str) -> ServiceError:
    return ServiceError(Reason.SERVICE_UNAVAILABLE,
                        f"the {service} service is unavailable; nothing was charged, retry shortly "
                        f"(request id {request_id})")


def error_body(status_type: str, message: str, param: str | None, code: str | None) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": status_type, "param": param, "code": code}},
        separators=(",", ":"),
    ).encode()


def service_error_response(error: ServiceError) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """The HTTP status, body and extra headers for a ServiceError."""
    mapped = HTTP_ERROR_BY_REASON[error.reason]
    headers = [] if mapped.retry_after is None else [(b"retry-after", str(mapped.retry_after).encode())]
    return mapped.status, error_body(mapped.type, error.message, error.field, error.reason.value.lower()), headers
