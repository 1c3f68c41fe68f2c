from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UsageGrouping(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    USAGE_GROUPING_UNSPECIFIED: _ClassVar[UsageGrouping]
    USAGE_GROUPING_DAY: _ClassVar[UsageGrouping]
    USAGE_GROUPING_MODEL: _ClassVar[UsageGrouping]
    USAGE_GROUPING_KEY: _ClassVar[UsageGrouping]
USAGE_GROUPING_UNSPECIFIED: UsageGrouping
USAGE_GROUPING_DAY: UsageGrouping
USAGE_GROUPING_MODEL: UsageGrouping
USAGE_GROUPING_KEY: UsageGrouping

class UsageQuery(_message.Message):
    __slots__ = ("start", "end", "group_by", "limit", "page")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    start: str
    end: str
    group_by: UsageGrouping
    limit: int
    page: str
    def __init__(self, start: _Optional[str] = ..., end: _Optional[str] = ..., group_by: _Optional[_Union[UsageGrouping, str]] = ..., limit: _Optional[int] = ..., page: _Optional[str] = ...) -> None: ...

class UsageBucket(_message.Message):
    __slots__ = ("day", "model", "key_id", "key_prefix", "requests", "images", "input_tokens", "output_tokens", "total_tokens", "megapixels", "credits_used", "daily_cap_micro_credits", "total_cap_micro_credits", "spent_today_micro_credits", "spent_total_micro_credits")
    DAY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_PREFIX_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MEGAPIXELS_FIELD_NUMBER: _ClassVar[int]
    CREDITS_USED_FIELD_NUMBER: _ClassVar[int]
    DAILY_CAP_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CAP_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    SPENT_TODAY_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    SPENT_TOTAL_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    day: str
    model: str
    key_id: str
    key_prefix: str
    requests: int
    images: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    megapixels: float
    credits_used: int
    daily_cap_micro_credits: int
    total_cap_micro_credits: int
    spent_today_micro_credits: int
    spent_total_micro_credits: int
    def __init__(self, day: _Optional[str] = ..., model: _Optional[str] = ..., key_id: _Optional[str] = ..., key_prefix: _Optional[str] = ..., requests: _Optional[int] = ..., images: _Optional[int] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., total_tokens: _Optional[int] = ..., megapixels: _Optional[float] = ..., credits_used: _Optional[int] = ..., daily_cap_micro_credits: _Optional[int] = ..., total_cap_micro_credits: _Optional[int] = ..., spent_today_micro_credits: _Optional[int] = ..., spent_total_micro_credits: _Optional[int] = ...) -> None: ...

class UsageReport(_message.Message):
    __slots__ = ("start", "end", "group_by", "buckets", "has_more", "next_page", "credits_remaining", "unlimited")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_FIELD_NUMBER: _ClassVar[int]
    CREDITS_REMAINING_FIELD_NUMBER: _ClassVar[int]
    UNLIMITED_FIELD_NUMBER: _ClassVar[int]
    start: str
    end: str
    group_by: UsageGrouping
    buckets: _containers.RepeatedCompositeFieldContainer[UsageBucket]
    has_more: bool
    next_page: str
    credits_remaining: int
    unlimited: bool
    def __init__(self, start: _Optional[str] = ..., end: _Optional[str] = ..., group_by: _Optional[_Union[UsageGrouping, str]] = ..., buckets: _Optional[_Iterable[_Union[UsageBucket, _Mapping]]] = ..., has_more: _Optional[bool] = ..., next_page: _Optional[str] = ..., credits_remaining: _Optional[int] = ..., unlimited: _Optional[bool] = ...) -> None: ...
