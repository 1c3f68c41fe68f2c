"""Outcomes and catalog models rendered for callers: JSON bytes for HTTP, protos for gRPC.

Base64 happens once, here: image bytes travel raw over gRPC and the base64 text
is spliced straight into the JSON (its alphabet needs no escaping), so a large
image is not scanned again by the JSON encoder. A large image is encoded a slice
at a time as it is sent (Base64Text), so the edge never holds its whole base64
text (4/3 of the image) on top of its bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pybase64
from google.protobuf import json_format

from quantized.common.v1 import images_pb2 as common_pb2
from quantized.images.v1 import images_pb2
from quantized_runtime.enum_names import enum_names


WATERMARK_NAMES = enum_names(common_pb2.Watermark.DESCRIPTOR)
NO_WATERMARK = common_pb2.WATERMARK_NONE

_dumps = json.JSONEncoder(separators=(",", ":")).encode

# The upstream's measures, optional on both UpstreamUsage and the public Usage.
_USAGE_MEASURES = ("input_tokens", "output_tokens", "total_tokens", "megapixels")


@dataclass(frozen=True)
class Outcome:
    """What the caller gets back, before it is rendered as JSON or proto."""

    created: int
    model: str
    images: list[common_pb2.GeneratedImage]
    # The route's watermark, for images whose provider left it unspecified.
    watermark: common_pb2.Watermark
    usage: common_pb2.UpstreamUsage
    images_generated: int
    credits_used: int
    credits_remaining: int | None
    # A replay of an Idempotency-Key's first answer: that request's id; empty otherwise.
    replay_of: str = ""


@dataclass(frozen=True)
class RenderedModels:
    """The catalog's model list as each transport sends it, so one cache entry
    serves HTTP and gRPC callers alike."""

    json: bytes
    proto: images_pb2.ListModelsResponse


# A multiple of 3, so the base64 of consecutive slices concatenates to that of the whole.
BASE64_SLICE_BYTES = 3 * 2**20


class Base64Text:
    """The base64 text of `data`, produced a slice at a time by `pieces()`."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data = data

    def __len__(self) -> int:
        return 4 * ((len(self._data) + 2) // 3)

    def pieces(self) -> Iterator[bytes]:
        view = memoryview(self._data)
        for start in range(0, len(view), BASE64_SLICE_BYTES):
            yield pybase64.b64encode(view[start:start + BASE64_SLICE_BYTES])


BodyPart = bytes | Base64Text


def _base64(data: bytes) -> BodyPart:
    if len(data) <= BASE64_SLICE_BYTES:
        return pybase64.b64encode(data)
    return Base64Text(data)


def _optional(message: Any, name: str) -> Any:
    return getattr(message, name) if message.HasField(name) else None


def image_watermark(image: common_pb2.GeneratedImage, route_watermark: int) -> int:
    return image.watermark or route_watermark or NO_WATERMARK


def generation_json(outcome: Outcome) -> list[BodyPart]:
    """The spec's response body, as parts to send in order (every field present,
    nulls included, no url). Base64 strings stay separate parts, so the body is
    never joined into one more copy."""
    usage = outcome.usage
    head = _dumps({"created": outcome.created, "model": outcome.model}).encode()
    parts: list[BodyPart] = [head[:-1] + b',"data":[']
    for index, image in enumerate(outcome.images):
        rest = _dumps({
            "revised_prompt": _optional(image, "revised_prompt"),
            "seed": _optional(image, "seed"),
            "watermark": WATERMARK_NAMES[image_watermark(image, outcome.watermark)],
            "flagged": image.flagged,
        }).encode()
        separator = b"," if index else b""
        data = image.image_data
        if image.flagged or not data:
            parts.append(separator + b'{"b64_json":null,' + rest[1:])
        else:
            parts.append(separator + b'{"b64_json":"')
            parts.append(_base64(data))
            parts.append(b'",' + rest[1:])
    tail = _dumps({"usage": {
        "images": outcome.images_generated,
        "input_tokens": _optional(usage, "input_tokens"),
        "output_tokens": _optional(usage, "output_tokens"),
        "total_tokens": _optional(usage, "total_tokens"),
        "megapixels": _optional(usage, "megapixels"),
        "credits_used": outcome.credits_used,
        "credits_remaining": outcome.credits_remaining,
    }}).encode()
    parts.append(b"]," + tail[1:])
    return parts


def generation_proto(outcome: Outcome, request_id: str) -> images_pb2.GenerateResponse:
    usage = images_pb2.Usage(images=outcome.images_generated, credits_used=outcome.credits_used)
    for name in _USAGE_MEASURES:
        if outcome.usage.HasField(name):
            setattr(usage, name, getattr(outcome.usage, name))
    if outcome.credits_remaining is not None:
        usage.credits_remaining = outcome.credits_remaining
    response = images_pb2.GenerateResponse(created=outcome.created, model=outcome.model,
                                           usage=usage, request_id=request_id)
    for image in outcome.images:
        entry = response.data.add()
        entry.CopyFrom(image)
        entry.watermark = image_watermark(image, outcome.watermark)
    return response


def replayed_outcome(response: images_pb2.GenerateResponse) -> Outcome:
    """The outcome a stored answer (generation_proto's) was rendered from, so both
    transports render it again byte for byte. Its images carry their watermark."""
    usage = common_pb2.UpstreamUsage()
    for name in _USAGE_MEASURES:
        if response.usage.HasField(name):
            setattr(usage, name, getattr(response.usage, name))
    return Outcome(
        created=response.created, model=response.model, images=list(response.data), watermark=NO_WATERMARK,
        usage=usage, images_generated=response.usage.images, credits_used=response.usage.credits_used,
        credits_remaining=_optional(response.usage, "credits_remaining"), replay_of=response.request_id)


def models_json(models: Iterable[common_pb2.Model]) -> bytes:
    """OpenAI's model list, extended with the catalog's discovery fields."""
    return _dumps({"object": "list", "data": [_model_json(model) for model in models]}).encode()


def _model_json(model: common_pb2.Model) -> dict[str, Any]:
    constraints = model.constraints
    return {
        "id": model.id,
        "object": "model",
        "created": model.created,
        "owned_by": model.owned_by,
        "supported_features": list(model.supported_features),
        "input_modality": _modalities(model.input_modalities),
        "output_modality": _modalities(model.output_modalities),
        "watermark": WATERMARK_NAMES.get(model.watermark or NO_WATERMARK, "none"),
        "cost": json_format.MessageToDict(model.cost) if model.HasField("cost") else None,
        "constraints": {
            "max_n": _optional(constraints, "max_n"),
            "sizes": list(constraints.sizes),
            "quality_values": list(constraints.quality_values),
            "notes": constraints.notes or None,
        },
        "providers": list(model.providers),
        "active": model.active,
        "options": list(model.options),
        "output_formats": list(model.output_formats),
    }


def _modalities(present: Iterable[str]) -> dict[str, bool]:
    flags = {"text": False, "image": False}
    for modality in present:
        flags[modality] = True
    return flags


def rendered_models(models: Sequence[common_pb2.Model]) -> RenderedModels:
    return RenderedModels(json=models_json(models), proto=images_pb2.ListModelsResponse(models=models))
