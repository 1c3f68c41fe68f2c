import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from quantized.common.v1 import images_pb2 as _images_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ResolveRouteRequest(_message.Message):
    __slots__ = ("model", "provider_override", "feature")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_OVERRIDE_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    model: str
    provider_override: str
    feature: str
    def __init__(self, model: _Optional[str] = ..., provider_override: _Optional[str] = ..., feature: _Optional[str] = ...) -> None: ...

class Route(_message.Message):
    __slots__ = ("provider", "model_id", "upstream_model_id", "region", "priority", "watermark", "adapter", "constraints")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    WATERMARK_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    provider: str
    model_id: str
    upstream_model_id: str
    region: str
    priority: int
    watermark: _images_pb2.Watermark
    adapter: str
    constraints: _images_pb2.ModelConstraints
    def __init__(self, provider: _Optional[str] = ..., model_id: _Optional[str] = ..., upstream_model_id: _Optional[str] = ..., region: _Optional[str] = ..., priority: _Optional[int] = ..., watermark: _Optional[_Union[_images_pb2.Watermark, str]] = ..., adapter: _Optional[str] = ..., constraints: _Optional[_Union[_images_pb2.ModelConstraints, _Mapping]] = ...) -> None: ...

class ResolveRouteResponse(_message.Message):
    __slots__ = ("model_id", "routes", "pinned")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    routes: _containers.RepeatedCompositeFieldContainer[Route]
    pinned: bool
    def __init__(self, model_id: _Optional[str] = ..., routes: _Optional[_Iterable[_Union[Route, _Mapping]]] = ..., pinned: _Optional[bool] = ...) -> None: ...

class QuotePriceRequest(_message.Message):
    __slots__ = ("model_id", "size", "quality", "n")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    size: str
    quality: _images_pb2.Quality
    n: int
    def __init__(self, model_id: _Optional[str] = ..., size: _Optional[str] = ..., quality: _Optional[_Union[_images_pb2.Quality, str]] = ..., n: _Optional[int] = ...) -> None: ...

class QuotePriceResponse(_message.Message):
    __slots__ = ("max_micro_credits", "per_image_micro_credits", "usage_priced", "usage_price")
    MAX_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    PER_IMAGE_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    USAGE_PRICED_FIELD_NUMBER: _ClassVar[int]
    USAGE_PRICE_FIELD_NUMBER: _ClassVar[int]
    max_micro_credits: int
    per_image_micro_credits: int
    usage_priced: bool
    usage_price: UsagePriceCard
    def __init__(self, max_micro_credits: _Optional[int] = ..., per_image_micro_credits: _Optional[int] = ..., usage_priced: _Optional[bool] = ..., usage_price: _Optional[_Union[UsagePriceCard, _Mapping]] = ...) -> None: ...

class UsagePriceCard(_message.Message):
    __slots__ = ("input_per_million_tokens", "output_per_million_tokens", "worst_case_output_per_image", "worst_case_input")
    INPUT_PER_MILLION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PER_MILLION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    WORST_CASE_OUTPUT_PER_IMAGE_FIELD_NUMBER: _ClassVar[int]
    WORST_CASE_INPUT_FIELD_NUMBER: _ClassVar[int]
    input_per_million_tokens: str
    output_per_million_tokens: str
    worst_case_output_per_image: str
    worst_case_input: str
    def __init__(self, input_per_million_tokens: _Optional[str] = ..., output_per_million_tokens: _Optional[str] = ..., worst_case_output_per_image: _Optional[str] = ..., worst_case_input: _Optional[str] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[_images_pb2.Model]
    def __init__(self, models: _Optional[_Iterable[_Union[_images_pb2.Model, _Mapping]]] = ...) -> None: ...

class ProviderModel(_message.Message):
    __slots__ = ("provider", "model_id", "upstream_model_id", "region", "priority", "is_active", "file_active", "operator_active", "adapter")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    IS_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    FILE_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    provider: str
    model_id: str
    upstream_model_id: str
    region: str
    priority: int
    is_active: bool
    file_active: bool
    operator_active: bool
    adapter: str
    def __init__(self, provider: _Optional[str] = ..., model_id: _Optional[str] = ..., upstream_model_id: _Optional[str] = ..., region: _Optional[str] = ..., priority: _Optional[int] = ..., is_active: _Optional[bool] = ..., file_active: _Optional[bool] = ..., operator_active: _Optional[bool] = ..., adapter: _Optional[str] = ...) -> None: ...

class SetProviderModelActiveRequest(_message.Message):
    __slots__ = ("provider", "model_id", "is_active", "actor")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    IS_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    provider: str
    model_id: str
    is_active: bool
    actor: str
    def __init__(self, provider: _Optional[str] = ..., model_id: _Optional[str] = ..., is_active: _Optional[bool] = ..., actor: _Optional[str] = ...) -> None: ...

class SetProviderModelActiveResponse(_message.Message):
    __slots__ = ("provider_model",)
    PROVIDER_MODEL_FIELD_NUMBER: _ClassVar[int]
    provider_model: ProviderModel
    def __init__(self, provider_model: _Optional[_Union[ProviderModel, _Mapping]] = ...) -> None: ...

class ListCatalogRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListCatalogResponse(_message.Message):
    __slots__ = ("models", "provider_models", "catalog_version")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_MODELS_FIELD_NUMBER: _ClassVar[int]
    CATALOG_VERSION_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[_images_pb2.Model]
    provider_models: _containers.RepeatedCompositeFieldContainer[ProviderModel]
    catalog_version: str
    def __init__(self, models: _Optional[_Iterable[_Union[_images_pb2.Model, _Mapping]]] = ..., provider_models: _Optional[_Iterable[_Union[ProviderModel, _Mapping]]] = ..., catalog_version: _Optional[str] = ...) -> None: ...

class ReloadCatalogRequest(_message.Message):
    __slots__ = ("actor",)
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    actor: str
    def __init__(self, actor: _Optional[str] = ...) -> None: ...

class ReloadCatalogResponse(_message.Message):
    __slots__ = ("catalog_version", "models", "provider_models")
    CATALOG_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_MODELS_FIELD_NUMBER: _ClassVar[int]
    catalog_version: str
    models: int
    provider_models: int
    def __init__(self, catalog_version: _Optional[str] = ..., models: _Optional[int] = ..., provider_models: _Optional[int] = ...) -> None: ...

class ListAuditEventsRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class AuditEvent(_message.Message):
    __slots__ = ("time", "actor", "action", "detail")
    TIME_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    actor: str
    action: str
    detail: str
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor: _Optional[str] = ..., action: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class ListAuditEventsResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[AuditEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[AuditEvent, _Mapping]]] = ...) -> None: ...
