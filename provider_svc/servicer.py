"""ProviderService: proto <-> domain. Stamps the catalog's watermark on every image."""

from __future__ import annotations

import grpc

from provider_svc.dispatch import Dispatcher
from provider_svc.domain import GenerationResult, ImageRequest
from quantized.common.v1 import images_pb2
from quantized.provider.v1 import provider_pb2, provider_pb2_grpc
from quantized_runtime.errors import Reason, ServiceError


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


def to_proto(result: GenerationResult, watermark: int) -> provider_pb2.GenerateResponse:
    response = provider_pb2.GenerateResponse(created=result.created)
    for image in result.images:
        response.images.add(
            image_data=image.data,
            mime_type=image.mime_type,
            revised_prompt=image.revised_prompt,
            seed=image.seed,
            watermark=watermark,
            flagged=image.flagged,
            flag_reason=image.flag_reason,
        )
    usage = result.usage
    response.usage.CopyFrom(images_pb2.UpstreamUsage(
        input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
        total_tokens=usage.total_tokens, megapixels=usage.megapixels))
    return response


class ProviderServicer(provider_pb2_grpc.ProviderServiceServicer):
    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher

    async def Generate(self, request: provider_pb2.GenerateRequest,  # noqa: N802 (gRPC method name)
                       context: grpc.aio.ServicerContext) -> provider_pb2.GenerateResponse:
        result = await self._dispatcher.generate(to_domain(request), context.time_remaining())
        return to_proto(result, request.watermark)
