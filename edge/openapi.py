"""The OpenAPI document, derived from the same field specs the validator enforces."""

from __future__ import annotations

from typing import Any

from quantized_runtime.errors import Reason

from edge.errors import HTTP_ERROR_BY_REASON, HttpReason
from edge.usage import GROUPINGS, USAGE_PATH
from edge.validation import BOOLEAN, ENUM, INTEGER, STRING, FieldSpec, RequestValidator

_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["message", "type", "param", "code"],
        "properties": {
            "message": {"type": "string"},
            "type": {"type": "string"},
            "param": {"type": ["string", "null"]},
            "code": {"type": ["string", "null"]},
        },
    }},
}


# What POST /v1/images/generations can answer; each status comes from the edge's one table.
_GENERATION_ERRORS: dict[Reason | HttpReason, str] = {
    HttpReason.INVALID_JSON: "the body is not JSON",
    Reason.MODALITY_MISMATCH: "the model does not output images",
    Reason.PROVIDER_NOT_OFFERED: "the pinned provider is not offered for the model",
    Reason.NO_ACTIVE_PROVIDERS: "the model has no active providers",
    Reason.UPSTREAM_REJECTED: "the upstream rejected a parameter",
    Reason.UNAUTHENTICATED: "missing, malformed or invalid API key or JWT",
    Reason.INSUFFICIENT_CREDITS: "insufficient credits",
    Reason.IDEMPOTENCY_CONFLICT: "the Idempotency-Key was used with a different request, its first request "
                                 "is still running, or its answer cannot be replayed (nothing was charged)",
    Reason.RATE_LIMITED: "the key or account is over its requests per minute or concurrent requests "
                         "(Retry-After says when to try again; nothing was charged)",
    Reason.MODEL_NOT_FOUND: "unknown model",
    HttpReason.REQUEST_TOO_LARGE: "body over the size limit",
    HttpReason.UNSUPPORTED_MEDIA_TYPE: "Content-Type is not application/json",
    Reason.INVALID_REQUEST: "validation error",
    Reason.INTERNAL: "internal error (generic message with a request id)",
    Reason.UPSTREAM_UNAVAILABLE: "upstream provider unavailable",
}


# What GET /v1/usage can answer besides 200.
_USAGE_ERRORS: dict[Reason | HttpReason, str] = {
    HttpReason.INVALID_QUERY_PARAMETER: "a query parameter is invalid, unknown or repeated (param names it)",
    Reason.UNAUTHENTICATED: "missing, malformed or invalid API key or JWT",
    Reason.RATE_LIMITED: "the key or account is over its requests per minute or concurrent requests",
    Reason.INTERNAL: "internal error (generic message with a request id)",
}

_USAGE_PARAMETERS = [
    {"name": "start", "in": "query", "required": False, "schema": {"type": "string"},
     "description": "ISO 8601 date or date-time, inclusive (no offset: UTC); default 30 days before end"},
    {"name": "end", "in": "query", "required": False, "schema": {"type": "string"},
     "description": "ISO 8601 date or date-time, exclusive, at most 366 days after start; "
                    "default the start of the next UTC day"},
    {"name": "group_by", "in": "query", "required": False,
     "schema": {"type": "string", "enum": list(GROUPINGS), "default": "day"}},
    {"name": "limit", "in": "query", "required": False,
     "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
     "description": "buckets per page"},
    {"name": "page", "in": "query", "required": False, "schema": {"type": "string"},
     "description": "the previous page's next_page"},
]


def _error_responses(errors: dict[Reason | HttpReason, str] = _GENERATION_ERRORS) -> dict[str, Any]:
    descriptions: dict[int, list[str]] = {}
    for reason, description in errors.items():
        descriptions.setdefault(HTTP_ERROR_BY_REASON[reason].status, []).append(description)
    return {
        str(status): {"description": "; ".join(parts),
                      "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        for status, parts in sorted(descriptions.items())
    }


def field_schema(spec: FieldSpec) -> dict[str, Any]:
    schema: dict[str, Any] = {}
    if spec.kind == STRING:
        schema["type"] = "string"
        if spec.pattern is not None:
            schema["pattern"] = f"^(?:{spec.pattern.pattern})$"
        if spec.not_blank:
            schema["pattern"] = schema.get("pattern", r"\S")
            schema["minLength"] = 1
    elif spec.kind == INTEGER:
        schema["type"] = "integer"
        schema["minimum"] = spec.minimum
        schema["maximum"] = spec.maximum
    elif spec.kind == BOOLEAN:
        schema["type"] = "boolean"
    elif spec.kind == ENUM:
        schema["type"] = "string"
        schema["enum"] = list(spec.enum_values)
    if not spec.required:
        schema["type"] = [schema["type"], "null"]
        if "enum" in schema:
            schema["enum"] = [*schema["enum"], None]
    if spec.default is not None:
        schema["default"] = spec.default
    if spec.description:
        schema["description"] = spec.description
    return schema


def request_schema(validator: RequestValidator) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": [spec.name for spec in validator.body_fields if spec.required],
        "properties": {spec.name: field_schema(spec) for spec in validator.body_fields},
    }


def openapi_document(validator: RequestValidator) -> dict[str, Any]:
    error_responses = _error_responses()
    unauthenticated = str(HTTP_ERROR_BY_REASON[Reason.UNAUTHENTICATED].status)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Quantized image router", "version": "v1"},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"ImageGenerationRequest": request_schema(validator), "Error": _ERROR_SCHEMA},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/images/generations": {"post": {
                "summary": "Generate images from a text prompt",
                "parameters": [{"name": "X-Quantized-Provider", "in": "header", "required": False,
                                "schema": {"type": "string"},
                                "description": "Pin one provider slug (disables fallback)"},
                               *({"name": spec.http_header, "in": "header", "required": spec.required,
                                  "schema": field_schema(spec), "description": spec.description}
                                 for spec in validator.header_fields)],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/ImageGenerationRequest"}}}},
                "responses": {"200": {"description": "Generated images"}, **error_responses},
            }},
            USAGE_PATH: {"get": {
                "summary": "The caller's account's usage per UTC day, model or API key, with its balance",
                "parameters": _USAGE_PARAMETERS,
                "responses": {"200": {"description": "Usage buckets, a page at a time (docs/api.md)"},
                              **_error_responses(_USAGE_ERRORS)},
            }},
            "/v1/models": {"get": {
                "summary": "List models with discovery fields",
                "responses": {"200": {"description": "OpenAI model list"},
                              unauthenticated: error_responses[unauthenticated]},
            }},
        },
    }
