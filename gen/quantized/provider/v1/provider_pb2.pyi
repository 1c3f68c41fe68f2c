from quantized.common.v1 import errors_pb2 as _errors_pb2
from quantized.common.v1 import images_pb2 as _images_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GenerateRequest(_message.Message):
    __slots__ = ("provider", "model_id", "upstream_model_id", "region", "params", "request_id", "watermark", "adapter", "constraints")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    WATERMARK_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    provider: str
    model_id: str
    upstream_model_id: str
    region: str
    params: _images_pb2.GenerationParams
    request_id: str
    watermark: _images_pb2.Watermark
    adapter: str
    constraints: _images_pb2.ModelConstraints
    def __init__(self, provider: _Optional[str] = ..., model_id: _Optional[str] = ..., upstream_model_id: _Optional[str] = ..., region: _Optional[str] = ..., params: _Optional[_Union[_images_pb2.GenerationParams, _Mapping]] = ..., request_id: _Optional[str] = ..., watermark: _Optional[_Union[_images_pb2.Watermark, str]] = ..., adapter: _Optional[str] = ..., constraints: _Optional[_Union[_images_pb2.ModelConstraints, _Mapping]] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("created", "images", "usage", "upstream_seconds")
    CREATED_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_SECONDS_FIELD_NUMBER: _ClassVar[int]
    created: int
    images: _containers.RepeatedCompositeFieldContainer[_images_pb2.GeneratedImage]
    usage: _images_pb2.UpstreamUsage
    upstream_seconds: float
    def __init__(self, created: _Optional[int] = ..., images: _Optional[_Iterable[_Union[_images_pb2.GeneratedImage, _Mapping]]] = ..., usage: _Optional[_Union[_images_pb2.UpstreamUsage, _Mapping]] = ..., upstream_seconds: _Optional[float] = ...) -> None: ...

class GenerateStreamRequest(_message.Message):
    __slots__ = ("call_id", "request", "timeout_seconds", "cancel", "traceparent")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    request: GenerateRequest
    timeout_seconds: float
    cancel: bool
    traceparent: str
    def __init__(self, call_id: _Optional[int] = ..., request: _Optional[_Union[GenerateRequest, _Mapping]] = ..., timeout_seconds: _Optional[float] = ..., cancel: _Optional[bool] = ..., traceparent: _Optional[str] = ...) -> None: ...

class ImageChunk(_message.Message):
    __slots__ = ("image_index", "data")
    IMAGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    image_index: int
    data: bytes
    def __init__(self, image_index: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class GenerateStreamResponse(_message.Message):
    __slots__ = ("call_id", "chunk", "response", "error", "draining")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    chunk: ImageChunk
    response: GenerateResponse
    error: _errors_pb2.CallError
    draining: bool
    def __init__(self, call_id: _Optional[int] = ..., chunk: _Optional[_Union[ImageChunk, _Mapping]] = ..., response: _Optional[_Union[GenerateResponse, _Mapping]] = ..., error: _Optional[_Union[_errors_pb2.CallError, _Mapping]] = ..., draining: _Optional[bool] = ...) -> None: ...
