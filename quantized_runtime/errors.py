"""The error model shared by every service, free of gRPC so domain code can raise it.

A ServiceError carries a reason from the proto enum quantized.common.v1.ErrorReason
(without its ERROR_REASON_ prefix). quantized_runtime.grpc_errors turns it into a
google.rpc.Status on the wire and back into a ServiceError at the caller.
"""

from __future__ import annotations

import enum

from quantized.common.v1 import errors_pb2

_PREFIX = "ERROR_REASON_"

Reason = enum.StrEnum(  # type: ignore[misc]
    "Reason",
    {
        name.removeprefix(_PREFIX): name.removeprefix(_PREFIX)
        for name in errors_pb2.ErrorReason.keys()
        if name != "ERROR_REASON_UNSPECIFIED"
    },
)
"""Error reasons, derived from the proto enum so the two cannot drift."""


class ServiceError(Exception):
    """A failure with a documented reason and a message safe to show the caller.

    The message must never contain a secret: it crosses service boundaries and
    reaches end users.
    """

    def __init__(self, reason: str, message: str, *, field: str | None = None,
                 metadata: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.reason = Reason(reason)
        self.message = message
        self.field = field
        self.metadata = dict(metadata or {})

    def __repr__(self) -> str:
        return f"ServiceError({self.reason.value!r}, {self.message!r}, field={self.field!r})"


_REASON_NAMES = {number: name.removeprefix(_PREFIX)
                 for name, number in errors_pb2.ErrorReason.items()}


def to_call_error(error: ServiceError) -> errors_pb2.CallError:
    """The error as one entry of a batch reply."""
    return errors_pb2.CallError(
        reason=errors_pb2.ErrorReason.Value(_PREFIX + error.reason.value),
        message=error.message, field=error.field or "", metadata=error.metadata)


def call_error_reason(message: errors_pb2.CallError) -> str:
    """The reason a batch entry carries, as a word (`INSUFFICIENT_CREDITS`); unknown: INTERNAL."""
    name = _REASON_NAMES.get(message.reason, "")
    return name if name in Reason.__members__ else Reason.INTERNAL.value


def from_call_error(message: errors_pb2.CallError) -> ServiceError:
    """The ServiceError a batch entry carries; an unknown reason reads as INTERNAL."""
    return ServiceError(call_error_reason(message), message.message, field=message.field or None,
                        metadata=dict(message.metadata))
