"""ServiceError <-> google.rpc.Status with an ErrorInfo (and BadRequest for a field)."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from quantized_runtime.errors import Reason, ServiceError

ERROR_DOMAIN = "quantized.dev"

GRPC_CODE_BY_REASON: dict[Reason, grpc.StatusCode] = {
    Reason.INVALID_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.MODEL_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Reason.MODALITY_MISMATCH: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.PROVIDER_NOT_OFFERED: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.NO_ACTIVE_PROVIDERS: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    Reason.INSUFFICIENT_CREDITS: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Reason.UPSTREAM_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Reason.UPSTREAM_REJECTED: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Reason.HOLD_CLOSED: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    Reason.INTERNAL: grpc.StatusCode.INTERNAL,
    Reason.ROUTE_NOT_FOUND: grpc.StatusCode.UNIMPLEMENTED,
    Reason.SERVICE_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Reason.RATE_LIMITED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Reason.IDEMPOTENCY_CONFLICT: grpc.StatusCode.FAILED_PRECONDITION,
}

_REASON_BY_GRPC_CODE: dict[grpc.StatusCode, Reason] = {
    grpc.StatusCode.UNAUTHENTICATED: Reason.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED: Reason.PERMISSION_DENIED,
    grpc.StatusCode.INVALID_ARGUMENT: Reason.INVALID_REQUEST,
    grpc.StatusCode.NOT_FOUND: Reason.NOT_FOUND,
    grpc.StatusCode.UNIMPLEMENTED: Reason.ROUTE_NOT_FOUND,
}

# Untyped statuses that mean the peer itself is down, restarting, unreachable or
# hung, as opposed to a peer that answered with a failure of its own.
PEER_UNAVAILABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def to_status(error: ServiceError) -> status_pb2.Status:
    code = GRPC_CODE_BY_REASON[error.reason]
    info = error_details_pb2.ErrorInfo(reason=error.reason.value, domain=ERROR_DOMAIN,
                                       metadata=error.metadata)
    details = [info]
    if error.field:
        details.append(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=error.field, description=error.message)
        ]))
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    return status_pb2.Status(code=code.value[0], message=error.message, details=packed)


def to_rpc_status(error: ServiceError) -> grpc.Status:
    return rpc_status.to_status(to_status(error))


def from_rpc_error(exc: grpc.RpcError) -> ServiceError:
    """Read the ServiceError a peer sent; transport failures become typed errors too."""
    # AioRpcError and sync grpc.Call both expose code/details/trailing_metadata.
    status = rpc_status.from_call(exc) if hasattr(exc, "trailing_metadata") else None
    if status is not None:
        reason: Reason | None = None
        field: str | None = None
        metadata: dict[str, str] = {}
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                if info.reason in Reason.__members__:
                    reason = Reason(info.reason)
                metadata = dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                if bad.field_violations:
                    field = bad.field_violations[0].field
        if reason is not None:
            return ServiceError(reason, status.message, field=field, metadata=metadata)
    code = exc.code() if hasattr(exc, "code") else None
    if code in _REASON_BY_GRPC_CODE:
        return ServiceError(_REASON_BY_GRPC_CODE[code], exc.details() or code.name.lower())
    if code in PEER_UNAVAILABLE_CODES:
        return ServiceError(Reason.SERVICE_UNAVAILABLE, f"the service did not answer ({code.name})")
    # A peer that failed without a typed status: our own failure.
    return ServiceError(Reason.INTERNAL, f"internal service call failed ({code.name if code else 'unknown'})")

