"""The OpenAPI document, derived from the same field specs the validator enforces."""

from __future__ import annotations

from typing import Any

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
        "required": [spec.name for spec in validator.fields if spec.required],
        "properties": {spec.name: field_schema(spec) for spec in validator.fields},
    }


def openapi_document(validator: RequestValidator) -> dict[str, Any]:
    error_responses = {
        str(status): {"description": description,
                      "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        for status, description in (
            ("400", "Bad request: not JSON, modality mismatch, provider not offered, no active providers, "
                    "upstream rejected a parameter"),
            ("401", "Missing, malformed or invalid API key or JWT"),
            ("402", "Insufficient credits"),
            ("404", "Unknown model or route"),
            ("413", "Body over the size limit"),
            ("415", "Content-Type is not application/json"),
            ("422", "Validation error"),
            ("500", "Internal error (generic message with a request id)"),
            ("503", "Upstream provider unavailable"),
        )
    }
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
                                "description": "Pin one provider slug (disables fallback)"}],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/ImageGenerationRequest"}}}},
                "responses": {"200": {"description": "Generated images"}, **error_responses},
            }},
            "/v1/models": {"get": {
                "summary": "List models with discovery fields",
                "responses": {"200": {"description": "OpenAI model list"},
                              "401": error_responses["401"]},
            }},
        },
    }
