"""ProviderService: proto <-> domain. Stamps the catalog's watermark on every image.

The response is written by `encode_response`: protobuf serialises everything but
the image bytes, which are spliced in as their wire-format fields. Building a
GenerateResponse and serialising it would hold each image three times (the
domain bytes, the message's copy, the serialised copy) on top of gRPC's own.
"""

from __future__ import annotations

import grpc
from google.protobuf.descriptor import FieldDescriptor

from provider_svc.dispatch import Dispatcher
from provider_svc.domain import GenerationResult, Image, ImageRequest
from quantized.common.v1 import images_pb2
from quantized.provider.v1 import provider_pb2
from quantized_runtime.errors import Reason, ServiceError

SERVICE_NAME = provider_pb2.DESCRIPTOR.services_by_name["ProviderService"].full_name


def _suffix(enum_type: object, prefix: str, number: int) -> str | None:
    """QUALITY_HD -> 'hd'; the zero value (UNSPECIFIED) means not set."""
    if number == 0:
        return None
    return enum_type.Name(number).removeprefix(prefix).lower()  # type: ignore[attr-defined]


def to_domain(request: provider_pb2.GenerateRequest) -> ImageRequest:
    params = request.params
    if not params.prompt:
        raise ServiceError(Reason.INVALID_REQUEST, "params.prompt is required", field="params.prompt")
    return ImageRequest(
        provider=request.provider,
        model_id=request.model_id,
        upstream_model_id=request.upstream_model_id or request.model_id,
        region=request.region,
        prompt=params.prompt,
        n=params.n or 1,
        size=params.size or "1024x1024",
        quality=_suffix(images_pb2.Quality, "QUALITY_", params.quality),
        style=_suffix(images_pb2.Style, "STYLE_", params.style),
        background=_suffix(images_pb2.Background, "BACKGROUND_", params.background),
        output_format=_suffix(images_pb2.OutputFormat, "OUTPUT_FORMAT_", params.output_format),
        output_compression=params.output_compression if params.HasField("output_compression") else None,
        moderation=_suffix(images_pb2.Moderation, "MODERATION_", params.moderation),
        seed=params.seed if params.HasField("seed") else None,
        negative_prompt=params.negative_prompt if params.HasField("negative_prompt") else None,
        user=params.user if params.HasField("user") else None,
        request_id=request.request_id,
    )


def _image_proto(image: Image, watermark: int, *, with_data: bool) -> images_pb2.GeneratedImage:
    return images_pb2.GeneratedImage(
        image_data=image.data if with_data else b"",
        mime_type=image.mime_type,
        revised_prompt=image.revised_prompt,
        seed=image.seed,
        watermark=watermark,
        flagged=image.flagged,
        flag_reason=image.flag_reason,
    )


def _shell(result: GenerationResult) -> provider_pb2.GenerateResponse:
    usage = result.usage
    return provider_pb2.GenerateResponse(created=result.created, usage=images_pb2.UpstreamUsage(
        input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
        total_tokens=usage.total_tokens, megapixels=usage.megapixels))


def to_proto(result: GenerationResult, watermark: int) -> provider_pb2.GenerateResponse:
    """The response as a message (what `encode_response` serialises, field for field)."""
    response = _shell(result)
    response.images.extend(_image_proto(image, watermark, with_data=True) for image in result.images)
    return response


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _length_delimited_tag(field: FieldDescriptor) -> bytes:
    return _varint(field.number << 3 | 2)


_IMAGES_TAG = _length_delimited_tag(provider_pb2.GenerateResponse.DESCRIPTOR.fields_by_name["images"])
_IMAGE_DATA_TAG = _length_delimited_tag(images_pb2.GeneratedImage.DESCRIPTOR.fields_by_name["image_data"])


def encode_response(result: GenerationResult, watermark: int) -> bytes:
    """The serialised GenerateResponse, copying each image's bytes exactly once."""
    parts: list[bytes] = [_shell(result).SerializeToString()]
    for image in result.images:
        meta = _image_proto(image, watermark, with_data=False).SerializeToString()
        data_fields: list[bytes] = []
        if image.data:
            data_fields = [_IMAGE_DATA_TAG, _varint(len(image.data)), image.data]
        parts += [_IMAGES_TAG, _varint(len(meta) + sum(map(len, data_fields))), meta, *data_fields]
    return b"".join(parts)


def _already_serialised(response: bytes) -> bytes:
    return response


class ProviderServicer:
    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher

    async def generate(self, request: provider_pb2.GenerateRequest, context: grpc.aio.ServicerContext) -> bytes:
        result = await self._dispatcher.generate(to_domain(request), context.time_remaining())
        return encode_response(result, request.watermark)

    def register(self, server: grpc.aio.Server) -> None:
        """ProviderService with a pass-through serialiser for the pre-encoded response."""
        handler = grpc.unary_unary_rpc_method_handler(
            self.generate,
            request_deserializer=provider_pb2.GenerateRequest.FromString,
            response_serializer=_already_serialised,
        )
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, {"Generate": handler}),))
