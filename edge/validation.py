"""Strict request validation derived from the proto contract.

The accepted fields, their JSON types, required/not-blank flags, bounds, patterns,
defaults and enum values are all read from `quantized.images.v1.GenerateRequest`
and its `(quantized.common.v1.rules)` options, so the proto stays the single source
of truth: a field added there is accepted (and checked) here without an edit.
The same rules apply to JSON bodies and to gRPC requests. A field whose rules
name an `http_header` (the Idempotency-Key) is read from that header on HTTP,
never from the body.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from quantized.common.v1 import field_rules_pb2, images_pb2 as common_pb2
from quantized.images.v1 import images_pb2
from quantized_runtime.enum_names import enum_words
from quantized_runtime.errors import Reason, ServiceError

_INTEGER_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}

STRING, INTEGER, BOOLEAN, ENUM = "string", "integer", "boolean", "enum"


@dataclass(frozen=True)
class FieldSpec:
    """One request field as the contract defines it."""

    name: str
    kind: str
    has_presence: bool
    required: bool
    not_blank: bool
    minimum: int | None
    maximum: int | None
    pattern: re.Pattern[str] | None
    default: Any
    description: str
    enum_values: Mapping[str, int]
    # On HTTP the field comes from this header instead of the body; empty: from the body.
    http_header: str = ""

    @classmethod
    def from_descriptor(cls, field: FieldDescriptor) -> FieldSpec:
        if field.is_repeated:
            raise TypeError(f"request field {field.name!r}: repeated fields are not supported by the edge")
        rules = field.GetOptions().Extensions[field_rules_pb2.rules]
        minimum = rules.min if rules.HasField("min") else None
        maximum = rules.max if rules.HasField("max") else None
        default: Any = None
        enum_values: Mapping[str, int] = {}
        if field.type == FieldDescriptor.TYPE_STRING:
            kind = STRING
            default = rules.default_string if rules.HasField("default_string") else None
        elif field.type in _INTEGER_RANGES:
            kind = INTEGER
            low, high = _INTEGER_RANGES[field.type]
            minimum = low if minimum is None else max(minimum, low)
            maximum = high if maximum is None else min(maximum, high)
            default = rules.default_int if rules.HasField("default_int") else None
        elif field.type == FieldDescriptor.TYPE_BOOL:
            kind = BOOLEAN
        elif field.type == FieldDescriptor.TYPE_ENUM:
            kind = ENUM
            enum_values = enum_words(field.enum_type)
        else:
            raise TypeError(f"request field {field.name!r}: proto type {field.type} is not supported by the edge")
        return cls(
            name=field.name,
            kind=kind,
            has_presence=field.has_presence,
            required=rules.required,
            not_blank=rules.not_blank,
            minimum=minimum,
            maximum=maximum,
            pattern=re.compile(rules.pattern) if rules.pattern else None,
            default=default,
            description=rules.description,
            enum_values=enum_values,
            http_header=rules.http_header,
        )


def _invalid(field: str | None, message: str) -> ServiceError:
    return ServiceError(Reason.INVALID_REQUEST, message, field=field)


_MISSING = object()

HeaderLookup = Callable[[str], str | None]


class RequestValidator:
    """Checks a JSON object or a proto message against the contract's field rules
    and returns a complete `GenerateRequest` with defaults filled in."""

    def __init__(self, descriptor: Descriptor = images_pb2.GenerateRequest.DESCRIPTOR,
                 message_class: Callable[..., images_pb2.GenerateRequest] = images_pb2.GenerateRequest) -> None:
        self.fields: tuple[FieldSpec, ...] = tuple(FieldSpec.from_descriptor(f) for f in descriptor.fields)
        self.field_names = frozenset(spec.name for spec in self.fields)
        # What a JSON body may carry, and the fields HTTP reads from headers instead.
        self.body_fields = tuple(spec for spec in self.fields if not spec.http_header)
        self.header_fields = tuple(spec for spec in self.fields if spec.http_header)
        self._header_lookups = tuple((spec, spec.http_header.lower()) for spec in self.header_fields)
        self._body_field_names = frozenset(spec.name for spec in self.body_fields)
        self._message_class = message_class
        self._accepted = ", ".join(spec.name for spec in self.body_fields)

    def from_json(self, body: Any, header: HeaderLookup | None = None) -> images_pb2.GenerateRequest:
        """The request from a JSON body and, for the fields that live in headers, `header`."""
        if not isinstance(body, dict):
            raise _invalid(None, "the request body must be a JSON object")
        for key in body:
            if key not in self._body_field_names:
                raise _invalid(str(key), f"Unrecognized request argument supplied: {key}. "
                                         f"This endpoint accepts only: {self._accepted}")
        values: dict[str, Any] = {}
        for spec in self.body_fields:
            raw = body.get(spec.name)
            if raw is not None:
                values[spec.name] = self._json_value(spec, raw)
        if header is not None:
            for spec, header_name in self._header_lookups:
                raw = header(header_name)
                if raw is not None:
                    values[spec.name] = raw
        return self._finish(values)

    def from_proto(self, request: images_pb2.GenerateRequest) -> images_pb2.GenerateRequest:
        values: dict[str, Any] = {}
        for spec in self.fields:
            if spec.has_presence:
                if not request.HasField(spec.name):
                    continue
            value = getattr(request, spec.name)
            if not spec.has_presence:
                # Without presence the zero value is the only way to say "not set".
                if spec.kind == ENUM and value == 0:
                    continue
                if spec.kind == STRING and value == "":
                    continue
            if spec.kind == ENUM and value not in spec.enum_values.values():
                raise _invalid(spec.name, self._enum_message(spec))
            values[spec.name] = value
        return self._finish(values)

    def _json_value(self, spec: FieldSpec, raw: Any) -> Any:
        if spec.kind == STRING:
            if not isinstance(raw, str):
                raise _invalid(spec.name, f"'{spec.name}' must be a string")
            if not raw.isascii():
                try:
                    raw.encode("utf-8")
                except UnicodeEncodeError:
                    raise _invalid(spec.name, f"'{spec.name}' must be valid Unicode text") from None
            return raw
        if spec.kind == INTEGER:
            if not isinstance(raw, int) or isinstance(raw, bool):
                raise _invalid(spec.name, f"'{spec.name}' must be an integer")
            return raw
        if spec.kind == BOOLEAN:
            if not isinstance(raw, bool):
                raise _invalid(spec.name, f"'{spec.name}' must be a boolean")
            return raw
        if not isinstance(raw, str) or raw not in spec.enum_values:
            raise _invalid(spec.name, self._enum_message(spec))
        return spec.enum_values[raw]

    @staticmethod
    def _enum_message(spec: FieldSpec) -> str:
        return f"'{spec.name}' must be one of: {', '.join(spec.enum_values)}"

    def _finish(self, values: dict[str, Any]) -> images_pb2.GenerateRequest:
        for spec in self.fields:
            value = values.get(spec.name, _MISSING)
            if value is _MISSING:
                if spec.required:
                    raise _invalid(spec.name, f"'{spec.name}' is required")
                if spec.default is not None:
                    values[spec.name] = spec.default
                continue
            if spec.not_blank and not value.strip():
                raise _invalid(spec.name, f"'{spec.name}' must not be empty or blank")
            if spec.kind == INTEGER and not spec.minimum <= value <= spec.maximum:
                raise _invalid(spec.name, f"'{spec.name}' must be between {spec.minimum} and {spec.maximum}")
            if spec.pattern is not None and not spec.pattern.fullmatch(value):
                named = f"'{spec.name}' (HTTP header {spec.http_header})" if spec.http_header else f"'{spec.name}'"
                raise _invalid(spec.name, f"{named} is invalid: {spec.description or spec.pattern.pattern}")
        return self._message_class(**values)


def generation_params(request: images_pb2.GenerateRequest) -> common_pb2.GenerationParams:
    """The validated request minus the model id, as dispatched to a provider."""
    params = common_pb2.GenerationParams()
    for name, has_presence in _PARAM_FIELDS:
        if request.HasField(name) if has_presence else getattr(request, name):
            setattr(params, name, getattr(request, name))
    return params


# (name, has presence) of every GenerationParams field; each must exist on the request.
_PARAM_FIELDS = tuple(
    (field.name, images_pb2.GenerateRequest.DESCRIPTOR.fields_by_name[field.name].has_presence)
    for field in common_pb2.GenerationParams.DESCRIPTOR.fields
)
