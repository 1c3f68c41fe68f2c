from quantized.common.v1 import field_rules_pb2 as _field_rules_pb2
from quantized.common.v1 import images_pb2 as _images_pb2
from quantized.common.v1 import usage_pb2 as _usage_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GenerateRequest(_message.Message):
    __slots__ = ("model", "prompt", "n", "size", "quality", "style", "background", "output_format", "output_compression", "moderation", "seed", "negative_prompt", "user", "idempotency_key")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    STYLE_FIELD_NUMBER: _ClassVar[int]
    BACKGROUND_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    MODERATION_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    model: str
    prompt: str
    n: int
    size: str
    quality: _images_pb2.Quality
    style: _images_pb2.Style
    background: _images_pb2.Background
    output_format: _images_pb2.OutputFormat
    output_compression: int
    moderation: _images_pb2.Moderation
    seed: int
    negative_prompt: str
    user: str
    idempotency_key: str
    def __init__(self, model: _Optional[str] = ..., prompt: _Optional[str] = ..., n: _Optional[int] = ..., size: _Optional[str] = ..., quality: _Optional[_Union[_images_pb2.Quality, str]] = ..., style: _Optional[_Union[_images_pb2.Style, str]] = ..., background: _Optional[_Union[_images_pb2.Background, str]] = ..., output_format: _Optional[_Union[_images_pb2.OutputFormat, str]] = ..., output_compression: _Optional[int] = ..., moderation: _Optional[_Union[_images_pb2.Moderation, str]] = ..., seed: _Optional[int] = ..., negative_prompt: _Optional[str] = ..., user: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("images", "input_tokens", "output_tokens", "total_tokens", "megapixels", "credits_used", "credits_remaining")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MEGAPIXELS_FIELD_NUMBER: _ClassVar[int]
    CREDITS_USED_FIELD_NUMBER: _ClassVar[int]
    CREDITS_REMAINING_FIELD_NUMBER: _ClassVar[int]
    images: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    megapixels: float
    credits_used: int
    credits_remaining: int
    def __init__(self, images: _Optional[int] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., total_tokens: _Optional[int] = ..., megapixels: _Optional[float] = ..., credits_used: _Optional[int] = ..., credits_remaining: _Optional[int] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("created", "model", "data", "usage", "request_id")
    CREATED_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    created: int
    model: str
    data: _containers.RepeatedCompositeFieldContainer[_images_pb2.GeneratedImage]
    usage: Usage
    request_id: str
    def __init__(self, created: _Optional[int] = ..., model: _Optional[str] = ..., data: _Optional[_Iterable[_Union[_images_pb2.GeneratedImage, _Mapping]]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[_images_pb2.Model]
    def __init__(self, models: _Optional[_Iterable[_Union[_images_pb2.Model, _Mapping]]] = ...) -> None: ...

class GetUsageRequest(_message.Message):
    __slots__ = ("query",)
    QUERY_FIELD_NUMBER: _ClassVar[int]
    query: _usage_pb2.UsageQuery
    def __init__(self, query: _Optional[_Union[_usage_pb2.UsageQuery, _Mapping]] = ...) -> None: ...

class GetUsageResponse(_message.Message):
    __slots__ = ("report", "request_id")
    REPORT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    report: _usage_pb2.UsageReport
    request_id: str
    def __init__(self, report: _Optional[_Union[_usage_pb2.UsageReport, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...
