from google.protobuf import descriptor_pb2 as _descriptor_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor
RULES_FIELD_NUMBER: _ClassVar[int]
rules: _descriptor.FieldDescriptor

class FieldRules(_message.Message):
    __slots__ = ("required", "not_blank", "min", "max", "pattern", "default_int", "default_string", "description", "http_header")
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    NOT_BLANK_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_INT_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_STRING_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    HTTP_HEADER_FIELD_NUMBER: _ClassVar[int]
    required: bool
    not_blank: bool
    min: int
    max: int
    pattern: str
    default_int: int
    default_string: str
    description: str
    http_header: str
    def __init__(self, required: _Optional[bool] = ..., not_blank: _Optional[bool] = ..., min: _Optional[int] = ..., max: _Optional[int] = ..., pattern: _Optional[str] = ..., default_int: _Optional[int] = ..., default_string: _Optional[str] = ..., description: _Optional[str] = ..., http_header: _Optional[str] = ...) -> None: ...
