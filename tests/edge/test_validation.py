"""Strict validation: derived from the proto, identical for JSON and gRPC callers."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from quantized.common.v1 import field_rules_pb2, usage_pb2
from quantized.common.v1 import images_pb2 as common_pb2
from quantized.images.v1 import images_pb2
from quantized_runtime.client import call
from quantized_runtime.errors import Reason, ServiceError

from edge.openapi import request_schema
from edge.validation import RequestValidator, generation_params
from tests.edge.conftest import CALL_TIMEOUT_SECONDS, Stack
from tests.edge.fakes import VALID_KEY

AUTH = {"Authorization": f"Bearer {VALID_KEY}"}
GRPC_AUTH = (("authorization", f"Bearer {VALID_KEY}"),)
BASE = {"model": "dall-e-3", "prompt": "a hedgehog"}
REQUEST_FIELDS = {f.name for f in images_pb2.GenerateRequest.DESCRIPTOR.fields}
# Read from a header on HTTP, never from the body.
HEADER_FIELDS = {"idempotency_key"}


def test_accepted_fields_are_exactly_the_proto_fields() -> None:
    validator = RequestValidator()
    assert validator.field_names == REQUEST_FIELDS
    assert set(request_schema(validator)["properties"]) == REQUEST_FIELDS - HEADER_FIELDS
    assert {spec.name for spec in validator.header_fields} == HEADER_FIELDS


def test_every_request_field_but_model_and_the_idempotency_key_reaches_the_provider() -> None:
    params = {f.name for f in common_pb2.GenerationParams.DESCRIPTOR.fields}
    assert params == REQUEST_FIELDS - {"model"} - HEADER_FIELDS


def test_the_idempotency_key_comes_from_its_header_and_never_from_the_body() -> None:
    validator = RequestValidator()
    headers = {"idempotency-key": "retry-me-1"}
    assert validator.from_json(dict(BASE), headers.get).idempotency_key == "retry-me-1"
    with pytest.raises(ServiceError) as in_body:
        validator.from_json({**BASE, "idempotency_key": "retry-me-1"})
    assert in_body.value.field == "idempotency_key"
    for bad in ("", "has space", "k" * 256, "caf\u00e9"):
        with pytest.raises(ServiceError) as refused:
            validator.from_json(dict(BASE), {"idempotency-key": bad}.get)
        assert refused.value.reason is Reason.INVALID_REQUEST
        assert "Idempotency-Key" in refused.value.message


def _request_with_extra_field() -> tuple[Any, type]:
    """GenerateRequest as if someone added `steps` (int32, 1..50, default 30) to the proto."""
    pool = descriptor_pool.DescriptorPool()
    for module in (descriptor_pb2, struct_pb2, field_rules_pb2, common_pb2, usage_pb2, images_pb2):
        file_proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(file_proto)
        if module is images_pb2:
            message = next(m for m in file_proto.message_type if m.name == "GenerateRequest")
            added = message.field.add(name="steps", number=99, json_name="steps",
                                      type=descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
                                      label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
                                      proto3_optional=True, oneof_index=len(message.oneof_decl))
            message.oneof_decl.add(name="_steps")
            added.options.Extensions[field_rules_pb2.rules].CopyFrom(
                field_rules_pb2.FieldRules(min=1, max=50, default_int=30))
        pool.Add(file_proto)
    descriptor = pool.FindMessageTypeByName("quantized.images.v1.GenerateRequest")
    return descriptor, message_factory.GetMessageClass(descriptor)


def test_a_field_added_to_the_proto_is_accepted_and_checked() -> None:
    descriptor, message_class = _request_with_extra_field()
    validator = RequestValidator(descriptor, message_class)
    assert "steps" in validator.field_names
    assert validator.from_json({**BASE}).steps == 30
    assert validator.from_json({**BASE, "steps": 7}).steps == 7
    with pytest.raises(ServiceError) as raised:
        validator.from_json({**BASE, "steps": 51})
    assert raised.value.field == "steps"
    assert "steps" in request_schema(validator)["properties"]


def test_defaults_come_from_the_proto() -> None:
    request = RequestValidator().from_json(dict(BASE))
    assert request.n == 1 and request.size == "1024x1024"
    params = generation_params(request)
    assert params.n == 1 and params.size == "1024x1024" and params.prompt == "a hedgehog"
    assert not params.HasField("seed") and params.quality == common_pb2.QUALITY_UNSPECIFIED


INVALID_BODIES: list[tuple[str, dict[str, Any], str | None]] = [
    ("empty body", {}, "model"),
    ("missing model", {"prompt": "x"}, "model"),
    ("missing prompt", {"model": "dall-e-3"}, "prompt"),
    ("null model", {**BASE, "model": None}, "model"),
    ("null prompt", {**BASE, "prompt": None}, "prompt"),
    ("empty prompt", {**BASE, "prompt": ""}, "prompt"),
    ("blank prompt", {**BASE, "prompt": "  \t\n "}, "prompt"),
    ("blank model", {**BASE, "model": "   "}, "model"),
    ("model not a string", {**BASE, "model": 3}, "model"),
    ("prompt not a string", {**BASE, "prompt": ["a"]}, "prompt"),
    ("n as string", {**BASE, "n": "2"}, "n"),
    ("n as fraction", {**BASE, "n": 2.5}, "n"),
    ("n as float", {**BASE, "n": 2.0}, "n"),
    ("n as bool", {**BASE, "n": True}, "n"),
    ("n zero", {**BASE, "n": 0}, "n"),
    ("n eleven", {**BASE, "n": 11}, "n"),
    ("n negative", {**BASE, "n": -1}, "n"),
    ("n huge", {**BASE, "n": 10**30}, "n"),
    ("size words", {**BASE, "size": "big"}, "size"),
    ("size one number", {**BASE, "size": "1024"}, "size"),
    ("size trailing space", {**BASE, "size": "1024x1024 "}, "size"),
    ("size zero", {**BASE, "size": "0x1024"}, "size"),
    ("size integer", {**BASE, "size": 1024}, "size"),
    ("quality unknown", {**BASE, "quality": "ultra"}, "quality"),
    ("quality upper case", {**BASE, "quality": "HD"}, "quality"),
    ("quality unspecified", {**BASE, "quality": "unspecified"}, "quality"),
    ("quality number", {**BASE, "quality": 1}, "quality"),
    ("style unknown", {**BASE, "style": "pretty"}, "style"),
    ("background unknown", {**BASE, "background": "none"}, "background"),
    ("output_format gif", {**BASE, "output_format": "gif"}, "output_format"),
    ("moderation high", {**BASE, "moderation": "high"}, "moderation"),
    ("compression over", {**BASE, "output_compression": 101}, "output_compression"),
    ("compression under", {**BASE, "output_compression": -1}, "output_compression"),
    ("compression string", {**BASE, "output_compression": "50"}, "output_compression"),
    ("seed negative", {**BASE, "seed": -1}, "seed"),
    ("seed too big", {**BASE, "seed": 2**32}, "seed"),
    ("seed string", {**BASE, "seed": "7"}, "seed"),
    ("seed fraction", {**BASE, "seed": 1.5}, "seed"),
    ("negative_prompt number", {**BASE, "negative_prompt": 5}, "negative_prompt"),
    ("user list", {**BASE, "user": ["a"]}, "user"),
    ("response_format", {**BASE, "response_format": "b64_json"}, "response_format"),
    ("response_format url", {**BASE, "response_format": "url"}, "response_format"),
    ("stream", {**BASE, "stream": True}, "stream"),
    ("messages", {**BASE, "messages": []}, "messages"),
    ("dimensions", {**BASE, "dimensions": 256}, "dimensions"),
    ("image", {**BASE, "image": "aGk="}, "image"),
    ("mask", {**BASE, "mask": "aGk="}, "mask"),
    ("typo", {**BASE, "qualty": "hd"}, "qualty"),
    ("unknown null", {**BASE, "extra": None}, "extra"),
]


@pytest.mark.parametrize(("body", "param"), [(b, p) for _, b, p in INVALID_BODIES],
                         ids=[name for name, _, _ in INVALID_BODIES])
async def test_invalid_json_bodies_are_422_naming_the_field(stack: Stack, body: dict[str, Any],
                                                             param: str) -> None:
    response = await stack.http.post("/v1/images/generations", headers=AUTH, json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert error["code"] == "invalid_request"
    assert error["type"] == "invalid_request_error"
    assert param in error["message"]
    assert stack.peers.provider.calls == []
    assert stack.peers.billing.count("Reserve") == 0


@pytest.mark.parametrize("body", [b"[]", b'"text"', b"5", b"null", b'[{"model": "dall-e-3"}]'],
                         ids=["list", "string", "number", "null", "wrapped"])
async def test_a_body_that_is_not_an_object_is_422(stack: Stack, body: bytes) -> None:
    response = await stack.http.post("/v1/images/generations", content=body,
                                     headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 422
    assert response.json()["error"]["param"] is None


VALID_BODIES: list[tuple[str, dict[str, Any]]] = [
    ("minimal", dict(BASE)),
    ("every field", {**BASE, "n": 2, "size": "1536x1024", "quality": "hd", "style": "vivid",
                     "background": "transparent", "output_format": "webp", "output_compression": 80,
                     "moderation": "low", "seed": 42, "negative_prompt": "rain", "user": "student-1"}),
    ("explicit nulls", {**BASE, "n": None, "size": None, "quality": None, "style": None, "background": None,
                        "output_format": None, "output_compression": None, "moderation": None, "seed": None,
                        "negative_prompt": None, "user": None}),
    ("bounds low", {**BASE, "n": 1, "output_compression": 0, "seed": 0}),
    ("bounds high", {**BASE, "n": 10, "output_compression": 100, "seed": 4294967295}),
    ("size auto", {**BASE, "size": "auto"}),
    ("every quality", {**BASE, "quality": "medium"}),
    ("unicode prompt", {**BASE, "prompt": "un hérisson 🦔 endormi"}),
]


@pytest.mark.parametrize("body", [b for _, b in VALID_BODIES], ids=[name for name, _ in VALID_BODIES])
async def test_valid_bodies_are_accepted(stack: Stack, body: dict[str, Any]) -> None:
    response = await stack.http.post("/v1/images/generations", headers=AUTH, json=body)
    assert response.status_code == 200, response.text
    params = stack.peers.provider.calls[0].params
    assert params.prompt == body["prompt"]
    assert params.n == (body.get("n") or 1)
    assert params.size == (body.get("size") or "1024x1024")


async def test_validated_values_reach_the_provider_as_typed_params(stack: Stack) -> None:
    body = VALID_BODIES[1][1]
    response = await stack.http.post("/v1/images/generations", headers=AUTH, json=body)
    assert response.status_code == 200
    params = stack.peers.provider.calls[0].params
    assert params.quality == common_pb2.QUALITY_HD
    assert params.style == common_pb2.STYLE_VIVID
    assert params.background == common_pb2.BACKGROUND_TRANSPARENT
    assert params.output_format == common_pb2.OUTPUT_FORMAT_WEBP
    assert params.moderation == common_pb2.MODERATION_LOW
    assert (params.output_compression, params.seed, params.negative_prompt, params.user) == (
        80, 42, "rain", "student-1")


INVALID_PROTOS: list[tuple[str, images_pb2.GenerateRequest, str]] = [
    ("empty", images_pb2.GenerateRequest(), "model"),
    ("missing prompt", images_pb2.GenerateRequest(model="dall-e-3"), "prompt"),
    ("blank prompt", images_pb2.GenerateRequest(model="dall-e-3", prompt="   "), "prompt"),
    ("n zero", images_pb2.GenerateRequest(model="dall-e-3", prompt="x", n=0), "n"),
    ("n eleven", images_pb2.GenerateRequest(model="dall-e-3", prompt="x", n=11), "n"),
    ("size", images_pb2.GenerateRequest(model="dall-e-3", prompt="x", size="huge"), "size"),
    ("unknown enum number", images_pb2.GenerateRequest(model="dall-e-3", prompt="x", quality=99), "quality"),
    ("compression", images_pb2.GenerateRequest(model="dall-e-3", prompt="x", output_compression=101),
     "output_compression"),
    ("seed", images_pb2.GenerateRequest(model="dall-e-3", prompt="x", seed=-5), "seed"),
]


@pytest.mark.parametrize(("request_message", "field"), [(r, f) for _, r, f in INVALID_PROTOS],
                         ids=[name for name, _, _ in INVALID_PROTOS])
async def test_invalid_grpc_requests_fail_with_the_field(stack: Stack, request_message: Any, field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stack.images.Generate(request_message, metadata=GRPC_AUTH)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(raised.value)
    info = error_details_pb2.ErrorInfo()
    bad = error_details_pb2.BadRequest()
    status.details[0].Unpack(info)
    status.details[1].Unpack(bad)
    assert info.reason == Reason.INVALID_REQUEST.value
    assert bad.field_violations[0].field == field
    assert stack.peers.provider.calls == []


async def test_grpc_unspecified_enums_and_unset_optionals_mean_defaults(stack: Stack) -> None:
    answer = await call(
        stack.images.Generate,
        images_pb2.GenerateRequest(model="dall-e-3", prompt="x", quality=common_pb2.QUALITY_UNSPECIFIED),
        timeout=CALL_TIMEOUT_SECONDS, metadata=GRPC_AUTH)
    assert answer.usage.images == 1
    params = stack.peers.provider.calls[0].params
    assert params.n == 1 and params.size == "1024x1024" and params.quality == common_pb2.QUALITY_UNSPECIFIED
