from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Quality(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    QUALITY_UNSPECIFIED: _ClassVar[Quality]
    QUALITY_STANDARD: _ClassVar[Quality]
    QUALITY_HD: _ClassVar[Quality]
    QUALITY_LOW: _ClassVar[Quality]
    QUALITY_MEDIUM: _ClassVar[Quality]
    QUALITY_HIGH: _ClassVar[Quality]
    QUALITY_AUTO: _ClassVar[Quality]

class Style(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STYLE_UNSPECIFIED: _ClassVar[Style]
    STYLE_VIVID: _ClassVar[Style]
    STYLE_NATURAL: _ClassVar[Style]

class Background(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BACKGROUND_UNSPECIFIED: _ClassVar[Background]
    BACKGROUND_TRANSPARENT: _ClassVar[Background]
    BACKGROUND_OPAQUE: _ClassVar[Background]
    BACKGROUND_AUTO: _ClassVar[Background]

class OutputFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTPUT_FORMAT_UNSPECIFIED: _ClassVar[OutputFormat]
    OUTPUT_FORMAT_PNG: _ClassVar[OutputFormat]
    OUTPUT_FORMAT_JPEG: _ClassVar[OutputFormat]
    OUTPUT_FORMAT_WEBP: _ClassVar[OutputFormat]

class Moderation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODERATION_UNSPECIFIED: _ClassVar[Moderation]
    MODERATION_AUTO: _ClassVar[Moderation]
    MODERATION_LOW: _ClassVar[Moderation]

class Watermark(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WATERMARK_UNSPECIFIED: _ClassVar[Watermark]
    WATERMARK_NONE: _ClassVar[Watermark]
    WATERMARK_C2PA: _ClassVar[Watermark]
    WATERMARK_PROVENANCE: _ClassVar[Watermark]
    WATERMARK_SYNTHID: _ClassVar[Watermark]
QUALITY_UNSPECIFIED: Quality
QUALITY_STANDARD: Quality
QUALITY_HD: Quality
QUALITY_LOW: Quality
QUALITY_MEDIUM: Quality
QUALITY_HIGH: Quality
QUALITY_AUTO: Quality
STYLE_UNSPECIFIED: Style
STYLE_VIVID: Style
STYLE_NATURAL: Style
BACKGROUND_UNSPECIFIED: Background
BACKGROUND_TRANSPARENT: Background
BACKGROUND_OPAQUE: Background
BACKGROUND_AUTO: Background
OUTPUT_FORMAT_UNSPECIFIED: OutputFormat
OUTPUT_FORMAT_PNG: OutputFormat
OUTPUT_FORMAT_JPEG: OutputFormat
OUTPUT_FORMAT_WEBP: OutputFormat
MODERATION_UNSPECIFIED: Moderation
MODERATION_AUTO: Moderation
MODERATION_LOW: Moderation
WATERMARK_UNSPECIFIED: Watermark
WATERMARK_NONE: Watermark
WATERMARK_C2PA: Watermark
WATERMARK_PROVENANCE: Watermark
WATERMARK_SYNTHID: Watermark

class GenerationParams(_message.Message):
    __slots__ = ("prompt", "n", "size", "quality", "style", "background", "output_format", "output_compression", "moderation", "seed", "negative_prompt", "user")
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
    prompt: str
    n: int
    size: str
    quality: Quality
    style: Style
    background: Background
    output_format: OutputFormat
    output_compression: int
    moderation: Moderation
    seed: int
    negative_prompt: str
    user: str
    def __init__(self, prompt: _Optional[str] = ..., n: _Optional[int] = ..., size: _Optional[str] = ..., quality: _Optional[_Union[Quality, str]] = ..., style: _Optional[_Union[Style, str]] = ..., background: _Optional[_Union[Background, str]] = ..., output_format: _Optional[_Union[OutputFormat, str]] = ..., output_compression: _Optional[int] = ..., moderation: _Optional[_Union[Moderation, str]] = ..., seed: _Optional[int] = ..., negative_prompt: _Optional[str] = ..., user: _Optional[str] = ...) -> None: ...

class GeneratedImage(_message.Message):
    __slots__ = ("image_data", "mime_type", "revised_prompt", "seed", "watermark", "flagged", "flag_reason")
    IMAGE_DATA_FIELD_NUMBER: _ClassVar[int]
    MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    REVISED_PROMPT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    WATERMARK_FIELD_NUMBER: _ClassVar[int]
    FLAGGED_FIELD_NUMBER: _ClassVar[int]
    FLAG_REASON_FIELD_NUMBER: _ClassVar[int]
    image_data: bytes
    mime_type: str
    revised_prompt: str
    seed: int
    watermark: Watermark
    flagged: bool
    flag_reason: str
    def __init__(self, image_data: _Optional[bytes] = ..., mime_type: _Optional[str] = ..., revised_prompt: _Optional[str] = ..., seed: _Optional[int] = ..., watermark: _Optional[_Union[Watermark, str]] = ..., flagged: _Optional[bool] = ..., flag_reason: _Optional[str] = ...) -> None: ...

class UpstreamUsage(_message.Message):
    __slots__ = ("input_tokens", "output_tokens", "total_tokens", "megapixels")
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MEGAPIXELS_FIELD_NUMBER: _ClassVar[int]
    input_tokens: int
    output_tokens: int
    total_tokens: int
    megapixels: float
    def __init__(self, input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., total_tokens: _Optional[int] = ..., megapixels: _Optional[float] = ...) -> None: ...

class ModelConstraints(_message.Message):
    __slots__ = ("max_n", "sizes", "quality_values", "notes", "size_range")
    MAX_N_FIELD_NUMBER: _ClassVar[int]
    SIZES_FIELD_NUMBER: _ClassVar[int]
    QUALITY_VALUES_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    SIZE_RANGE_FIELD_NUMBER: _ClassVar[int]
    max_n: int
    sizes: _containers.RepeatedScalarFieldContainer[str]
    quality_values: _containers.RepeatedScalarFieldContainer[str]
    notes: str
    size_range: SizeRange
    def __init__(self, max_n: _Optional[int] = ..., sizes: _Optional[_Iterable[str]] = ..., quality_values: _Optional[_Iterable[str]] = ..., notes: _Optional[str] = ..., size_range: _Optional[_Union[SizeRange, _Mapping]] = ...) -> None: ...

class SizeRange(_message.Message):
    __slots__ = ("min_side", "max_side", "step", "max_ratio", "max_pixels")
    MIN_SIDE_FIELD_NUMBER: _ClassVar[int]
    MAX_SIDE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    MAX_RATIO_FIELD_NUMBER: _ClassVar[int]
    MAX_PIXELS_FIELD_NUMBER: _ClassVar[int]
    min_side: int
    max_side: int
    step: int
    max_ratio: float
    max_pixels: int
    def __init__(self, min_side: _Optional[int] = ..., max_side: _Optional[int] = ..., step: _Optional[int] = ..., max_ratio: _Optional[float] = ..., max_pixels: _Optional[int] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("id", "created", "owned_by", "supported_features", "input_modalities", "output_modalities", "watermark", "cost", "constraints", "providers", "active", "options", "output_formats")
    ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    OWNED_BY_FIELD_NUMBER: _ClassVar[int]
    SUPPORTED_FEATURES_FIELD_NUMBER: _ClassVar[int]
    INPUT_MODALITIES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_MODALITIES_FIELD_NUMBER: _ClassVar[int]
    WATERMARK_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMATS_FIELD_NUMBER: _ClassVar[int]
    id: str
    created: int
    owned_by: str
    supported_features: _containers.RepeatedScalarFieldContainer[str]
    input_modalities: _containers.RepeatedScalarFieldContainer[str]
    output_modalities: _containers.RepeatedScalarFieldContainer[str]
    watermark: Watermark
    cost: _struct_pb2.Struct
    constraints: ModelConstraints
    providers: _containers.RepeatedScalarFieldContainer[str]
    active: bool
    options: _containers.RepeatedScalarFieldContainer[str]
    output_formats: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., created: _Optional[int] = ..., owned_by: _Optional[str] = ..., supported_features: _Optional[_Iterable[str]] = ..., input_modalities: _Optional[_Iterable[str]] = ..., output_modalities: _Optional[_Iterable[str]] = ..., watermark: _Optional[_Union[Watermark, str]] = ..., cost: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., constraints: _Optional[_Union[ModelConstraints, _Mapping]] = ..., providers: _Optional[_Iterable[str]] = ..., active: _Optional[bool] = ..., options: _Optional[_Iterable[str]] = ..., output_formats: _Optional[_Iterable[str]] = ...) -> None: ...
