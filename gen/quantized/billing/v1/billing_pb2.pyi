import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from quantized.common.v1 import errors_pb2 as _errors_pb2
from quantized.common.v1 import images_pb2 as _images_pb2
from quantized.common.v1 import usage_pb2 as _usage_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IdempotencyState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IDEMPOTENCY_STATE_UNSPECIFIED: _ClassVar[IdempotencyState]
    IDEMPOTENCY_STATE_RUNNING: _ClassVar[IdempotencyState]
    IDEMPOTENCY_STATE_COMPLETED: _ClassVar[IdempotencyState]
    IDEMPOTENCY_STATE_TOO_LARGE: _ClassVar[IdempotencyState]
    IDEMPOTENCY_STATE_FAILED_AFTER_GENERATION: _ClassVar[IdempotencyState]
IDEMPOTENCY_STATE_UNSPECIFIED: IdempotencyState
IDEMPOTENCY_STATE_RUNNING: IdempotencyState
IDEMPOTENCY_STATE_COMPLETED: IdempotencyState
IDEMPOTENCY_STATE_TOO_LARGE: IdempotencyState
IDEMPOTENCY_STATE_FAILED_AFTER_GENERATION: IdempotencyState

class AuthenticateRequest(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: str
    def __init__(self, token: _Optional[str] = ...) -> None: ...

class AuthenticateResponse(_message.Message):
    __slots__ = ("account_id", "unlimited", "key_id", "key_limits", "account_limits", "key_caps")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    UNLIMITED_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_LIMITS_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_LIMITS_FIELD_NUMBER: _ClassVar[int]
    KEY_CAPS_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    unlimited: bool
    key_id: str
    key_limits: RateLimits
    account_limits: RateLimits
    key_caps: SpendingCaps
    def __init__(self, account_id: _Optional[str] = ..., unlimited: _Optional[bool] = ..., key_id: _Optional[str] = ..., key_limits: _Optional[_Union[RateLimits, _Mapping]] = ..., account_limits: _Optional[_Union[RateLimits, _Mapping]] = ..., key_caps: _Optional[_Union[SpendingCaps, _Mapping]] = ...) -> None: ...

class RateLimits(_message.Message):
    __slots__ = ("requests_per_minute", "max_concurrent_requests")
    REQUESTS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests_per_minute: int
    max_concurrent_requests: int
    def __init__(self, requests_per_minute: _Optional[int] = ..., max_concurrent_requests: _Optional[int] = ...) -> None: ...

class LimitSetting(_message.Message):
    __slots__ = ("requests_per_minute", "max_concurrent_requests")
    REQUESTS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests_per_minute: int
    max_concurrent_requests: int
    def __init__(self, requests_per_minute: _Optional[int] = ..., max_concurrent_requests: _Optional[int] = ...) -> None: ...

class ReserveRequest(_message.Message):
    __slots__ = ("account_id", "amount_micro_credits", "request_id", "key_id")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    amount_micro_credits: int
    request_id: str
    key_id: str
    def __init__(self, account_id: _Optional[str] = ..., amount_micro_credits: _Optional[int] = ..., request_id: _Optional[str] = ..., key_id: _Optional[str] = ...) -> None: ...

class ReserveResponse(_message.Message):
    __slots__ = ("hold_id", "expires_at")
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    hold_id: str
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, hold_id: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class UsageRecord(_message.Message):
    __slots__ = ("model_id", "provider", "images", "usage", "user")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    provider: str
    images: int
    usage: _images_pb2.UpstreamUsage
    user: str
    def __init__(self, model_id: _Optional[str] = ..., provider: _Optional[str] = ..., images: _Optional[int] = ..., usage: _Optional[_Union[_images_pb2.UpstreamUsage, _Mapping]] = ..., user: _Optional[str] = ...) -> None: ...

class SettleRequest(_message.Message):
    __slots__ = ("hold_id", "amount_micro_credits", "usage")
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    hold_id: str
    amount_micro_credits: int
    usage: UsageRecord
    def __init__(self, hold_id: _Optional[str] = ..., amount_micro_credits: _Optional[int] = ..., usage: _Optional[_Union[UsageRecord, _Mapping]] = ...) -> None: ...

class SettleResponse(_message.Message):
    __slots__ = ("charged_micro_credits", "balance_micro_credits", "spendable_micro_credits")
    CHARGED_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    BALANCE_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    SPENDABLE_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    charged_micro_credits: int
    balance_micro_credits: int
    spendable_micro_credits: int
    def __init__(self, charged_micro_credits: _Optional[int] = ..., balance_micro_credits: _Optional[int] = ..., spendable_micro_credits: _Optional[int] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("hold_id",)
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    hold_id: str
    def __init__(self, hold_id: _Optional[str] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ("balance_micro_credits",)
    BALANCE_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    balance_micro_credits: int
    def __init__(self, balance_micro_credits: _Optional[int] = ...) -> None: ...

class AcquireLeaseRequest(_message.Message):
    __slots__ = ("account_id", "holder", "request_id", "min_micro_credits", "want_micro_credits", "unit_micro_credits")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MIN_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    WANT_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    UNIT_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    holder: str
    request_id: str
    min_micro_credits: int
    want_micro_credits: int
    unit_micro_credits: int
    def __init__(self, account_id: _Optional[str] = ..., holder: _Optional[str] = ..., request_id: _Optional[str] = ..., min_micro_credits: _Optional[int] = ..., want_micro_credits: _Optional[int] = ..., unit_micro_credits: _Optional[int] = ...) -> None: ...

class ExtendLeaseRequest(_message.Message):
    __slots__ = ("lease_id", "min_micro_credits", "want_micro_credits", "unit_micro_credits")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    MIN_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    WANT_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    UNIT_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    min_micro_credits: int
    want_micro_credits: int
    unit_micro_credits: int
    def __init__(self, lease_id: _Optional[str] = ..., min_micro_credits: _Optional[int] = ..., want_micro_credits: _Optional[int] = ..., unit_micro_credits: _Optional[int] = ...) -> None: ...

class LeaseResponse(_message.Message):
    __slots__ = ("lease_id", "amount_micro_credits", "charged_micro_credits", "expires_at", "spendable_micro_credits")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    CHARGED_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    SPENDABLE_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    amount_micro_credits: int
    charged_micro_credits: int
    expires_at: _timestamp_pb2.Timestamp
    spendable_micro_credits: int
    def __init__(self, lease_id: _Optional[str] = ..., amount_micro_credits: _Optional[int] = ..., charged_micro_credits: _Optional[int] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., spendable_micro_credits: _Optional[int] = ...) -> None: ...

class ChargeRequest(_message.Message):
    __slots__ = ("account_id", "request_id", "lease_id", "amount_micro_credits", "usage", "key_id")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    request_id: str
    lease_id: str
    amount_micro_credits: int
    usage: UsageRecord
    key_id: str
    def __init__(self, account_id: _Optional[str] = ..., request_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., amount_micro_credits: _Optional[int] = ..., usage: _Optional[_Union[UsageRecord, _Mapping]] = ..., key_id: _Optional[str] = ...) -> None: ...

class ChargeResponse(_message.Message):
    __slots__ = ("charged_micro_credits", "late", "spendable_micro_credits", "key_capped")
    CHARGED_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    LATE_FIELD_NUMBER: _ClassVar[int]
    SPENDABLE_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    KEY_CAPPED_FIELD_NUMBER: _ClassVar[int]
    charged_micro_credits: int
    late: bool
    spendable_micro_credits: int
    key_capped: bool
    def __init__(self, charged_micro_credits: _Optional[int] = ..., late: _Optional[bool] = ..., spendable_micro_credits: _Optional[int] = ..., key_capped: _Optional[bool] = ...) -> None: ...

class ReturnLeaseRequest(_message.Message):
    __slots__ = ("lease_id",)
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    def __init__(self, lease_id: _Optional[str] = ...) -> None: ...

class ReturnLeaseResponse(_message.Message):
    __slots__ = ("returned_micro_credits", "spendable_micro_credits")
    RETURNED_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    SPENDABLE_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    returned_micro_credits: int
    spendable_micro_credits: int
    def __init__(self, returned_micro_credits: _Optional[int] = ..., spendable_micro_credits: _Optional[int] = ...) -> None: ...

class LedgerOperation(_message.Message):
    __slots__ = ("reserve", "settle", "release", "acquire_lease", "extend_lease", "charge", "return_lease", "traceparent")
    RESERVE_FIELD_NUMBER: _ClassVar[int]
    SETTLE_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    ACQUIRE_LEASE_FIELD_NUMBER: _ClassVar[int]
    EXTEND_LEASE_FIELD_NUMBER: _ClassVar[int]
    CHARGE_FIELD_NUMBER: _ClassVar[int]
    RETURN_LEASE_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    reserve: ReserveRequest
    settle: SettleRequest
    release: ReleaseRequest
    acquire_lease: AcquireLeaseRequest
    extend_lease: ExtendLeaseRequest
    charge: ChargeRequest
    return_lease: ReturnLeaseRequest
    traceparent: str
    def __init__(self, reserve: _Optional[_Union[ReserveRequest, _Mapping]] = ..., settle: _Optional[_Union[SettleRequest, _Mapping]] = ..., release: _Optional[_Union[ReleaseRequest, _Mapping]] = ..., acquire_lease: _Optional[_Union[AcquireLeaseRequest, _Mapping]] = ..., extend_lease: _Optional[_Union[ExtendLeaseRequest, _Mapping]] = ..., charge: _Optional[_Union[ChargeRequest, _Mapping]] = ..., return_lease: _Optional[_Union[ReturnLeaseRequest, _Mapping]] = ..., traceparent: _Optional[str] = ...) -> None: ...

class LedgerRequest(_message.Message):
    __slots__ = ("batch_id", "operations")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    batch_id: int
    operations: _containers.RepeatedCompositeFieldContainer[LedgerOperation]
    def __init__(self, batch_id: _Optional[int] = ..., operations: _Optional[_Iterable[_Union[LedgerOperation, _Mapping]]] = ...) -> None: ...

class LedgerResult(_message.Message):
    __slots__ = ("reserve", "settle", "release", "error", "acquire_lease", "extend_lease", "charge", "return_lease")
    RESERVE_FIELD_NUMBER: _ClassVar[int]
    SETTLE_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ACQUIRE_LEASE_FIELD_NUMBER: _ClassVar[int]
    EXTEND_LEASE_FIELD_NUMBER: _ClassVar[int]
    CHARGE_FIELD_NUMBER: _ClassVar[int]
    RETURN_LEASE_FIELD_NUMBER: _ClassVar[int]
    reserve: ReserveResponse
    settle: SettleResponse
    release: ReleaseResponse
    error: _errors_pb2.CallError
    acquire_lease: LeaseResponse
    extend_lease: LeaseResponse
    charge: ChargeResponse
    return_lease: ReturnLeaseResponse
    def __init__(self, reserve: _Optional[_Union[ReserveResponse, _Mapping]] = ..., settle: _Optional[_Union[SettleResponse, _Mapping]] = ..., release: _Optional[_Union[ReleaseResponse, _Mapping]] = ..., error: _Optional[_Union[_errors_pb2.CallError, _Mapping]] = ..., acquire_lease: _Optional[_Union[LeaseResponse, _Mapping]] = ..., extend_lease: _Optional[_Union[LeaseResponse, _Mapping]] = ..., charge: _Optional[_Union[ChargeResponse, _Mapping]] = ..., return_lease: _Optional[_Union[ReturnLeaseResponse, _Mapping]] = ...) -> None: ...

class LedgerResponse(_message.Message):
    __slots__ = ("batch_id", "results", "draining")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    batch_id: int
    results: _containers.RepeatedCompositeFieldContainer[LedgerResult]
    draining: bool
    def __init__(self, batch_id: _Optional[int] = ..., results: _Optional[_Iterable[_Union[LedgerResult, _Mapping]]] = ..., draining: _Optional[bool] = ...) -> None: ...

class Account(_message.Message):
    __slots__ = ("account_id", "name", "unlimited", "balance_micro_credits", "held_micro_credits", "created_at", "limits")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    UNLIMITED_FIELD_NUMBER: _ClassVar[int]
    BALANCE_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    HELD_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    name: str
    unlimited: bool
    balance_micro_credits: int
    held_micro_credits: int
    created_at: _timestamp_pb2.Timestamp
    limits: LimitSetting
    def __init__(self, account_id: _Optional[str] = ..., name: _Optional[str] = ..., unlimited: _Optional[bool] = ..., balance_micro_credits: _Optional[int] = ..., held_micro_credits: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., limits: _Optional[_Union[LimitSetting, _Mapping]] = ...) -> None: ...

class ApiKey(_message.Message):
    __slots__ = ("key_id", "prefix", "revoked", "created_at", "limits", "caps", "spend")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    CAPS_FIELD_NUMBER: _ClassVar[int]
    SPEND_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    prefix: str
    revoked: bool
    created_at: _timestamp_pb2.Timestamp
    limits: LimitSetting
    caps: SpendingCaps
    spend: KeySpend
    def __init__(self, key_id: _Optional[str] = ..., prefix: _Optional[str] = ..., revoked: _Optional[bool] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., limits: _Optional[_Union[LimitSetting, _Mapping]] = ..., caps: _Optional[_Union[SpendingCaps, _Mapping]] = ..., spend: _Optional[_Union[KeySpend, _Mapping]] = ...) -> None: ...

class SpendingCaps(_message.Message):
    __slots__ = ("daily_micro_credits", "total_micro_credits")
    DAILY_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    daily_micro_credits: int
    total_micro_credits: int
    def __init__(self, daily_micro_credits: _Optional[int] = ..., total_micro_credits: _Optional[int] = ...) -> None: ...

class KeySpend(_message.Message):
    __slots__ = ("total_micro_credits", "today_micro_credits", "held_micro_credits")
    TOTAL_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    TODAY_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    HELD_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    total_micro_credits: int
    today_micro_credits: int
    held_micro_credits: int
    def __init__(self, total_micro_credits: _Optional[int] = ..., today_micro_credits: _Optional[int] = ..., held_micro_credits: _Optional[int] = ...) -> None: ...

class Hold(_message.Message):
    __slots__ = ("hold_id", "amount_micro_credits", "request_id", "expires_at")
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    hold_id: str
    amount_micro_credits: int
    request_id: str
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, hold_id: _Optional[str] = ..., amount_micro_credits: _Optional[int] = ..., request_id: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class UsageEntry(_message.Message):
    __slots__ = ("time", "request_id", "usage", "micro_credits")
    TIME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    request_id: str
    usage: UsageRecord
    micro_credits: int
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., request_id: _Optional[str] = ..., usage: _Optional[_Union[UsageRecord, _Mapping]] = ..., micro_credits: _Optional[int] = ...) -> None: ...

class CreateAccountRequest(_message.Message):
    __slots__ = ("name", "credits_micro_credits", "unlimited")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREDITS_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    UNLIMITED_FIELD_NUMBER: _ClassVar[int]
    name: str
    credits_micro_credits: int
    unlimited: bool
    def __init__(self, name: _Optional[str] = ..., credits_micro_credits: _Optional[int] = ..., unlimited: _Optional[bool] = ...) -> None: ...

class CreateAccountResponse(_message.Message):
    __slots__ = ("account", "api_key", "key")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    account: Account
    api_key: str
    key: ApiKey
    def __init__(self, account: _Optional[_Union[Account, _Mapping]] = ..., api_key: _Optional[str] = ..., key: _Optional[_Union[ApiKey, _Mapping]] = ...) -> None: ...

class CreateApiKeyRequest(_message.Message):
    __slots__ = ("account_id", "caps")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    CAPS_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    caps: SpendingCaps
    def __init__(self, account_id: _Optional[str] = ..., caps: _Optional[_Union[SpendingCaps, _Mapping]] = ...) -> None: ...

class CreateApiKeyResponse(_message.Message):
    __slots__ = ("api_key", "key")
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    api_key: str
    key: ApiKey
    def __init__(self, api_key: _Optional[str] = ..., key: _Optional[_Union[ApiKey, _Mapping]] = ...) -> None: ...

class RevokeApiKeyRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class RevokeApiKeyResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: ApiKey
    def __init__(self, key: _Optional[_Union[ApiKey, _Mapping]] = ...) -> None: ...

class GrantCreditsRequest(_message.Message):
    __slots__ = ("account_id", "amount_micro_credits")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    amount_micro_credits: int
    def __init__(self, account_id: _Optional[str] = ..., amount_micro_credits: _Optional[int] = ...) -> None: ...

class GrantCreditsResponse(_message.Message):
    __slots__ = ("account",)
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    account: Account
    def __init__(self, account: _Optional[_Union[Account, _Mapping]] = ...) -> None: ...

class GetAccountRequest(_message.Message):
    __slots__ = ("account_id",)
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    def __init__(self, account_id: _Optional[str] = ...) -> None: ...

class GetAccountResponse(_message.Message):
    __slots__ = ("account", "keys", "holds", "recent_usage")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    HOLDS_FIELD_NUMBER: _ClassVar[int]
    RECENT_USAGE_FIELD_NUMBER: _ClassVar[int]
    account: Account
    keys: _containers.RepeatedCompositeFieldContainer[ApiKey]
    holds: _containers.RepeatedCompositeFieldContainer[Hold]
    recent_usage: _containers.RepeatedCompositeFieldContainer[UsageEntry]
    def __init__(self, account: _Optional[_Union[Account, _Mapping]] = ..., keys: _Optional[_Iterable[_Union[ApiKey, _Mapping]]] = ..., holds: _Optional[_Iterable[_Union[Hold, _Mapping]]] = ..., recent_usage: _Optional[_Iterable[_Union[UsageEntry, _Mapping]]] = ...) -> None: ...

class UpdateApiKeyLimitsRequest(_message.Message):
    __slots__ = ("key_id", "limits", "use_defaults")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    USE_DEFAULTS_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    limits: LimitSetting
    use_defaults: bool
    def __init__(self, key_id: _Optional[str] = ..., limits: _Optional[_Union[LimitSetting, _Mapping]] = ..., use_defaults: _Optional[bool] = ...) -> None: ...

class UpdateApiKeyLimitsResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: ApiKey
    def __init__(self, key: _Optional[_Union[ApiKey, _Mapping]] = ...) -> None: ...

class UpdateAccountLimitsRequest(_message.Message):
    __slots__ = ("account_id", "limits", "use_defaults")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    USE_DEFAULTS_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    limits: LimitSetting
    use_defaults: bool
    def __init__(self, account_id: _Optional[str] = ..., limits: _Optional[_Union[LimitSetting, _Mapping]] = ..., use_defaults: _Optional[bool] = ...) -> None: ...

class UpdateAccountLimitsResponse(_message.Message):
    __slots__ = ("account",)
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    account: Account
    def __init__(self, account: _Optional[_Union[Account, _Mapping]] = ...) -> None: ...

class UpdateApiKeyCapsRequest(_message.Message):
    __slots__ = ("key_id", "caps")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    CAPS_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    caps: SpendingCaps
    def __init__(self, key_id: _Optional[str] = ..., caps: _Optional[_Union[SpendingCaps, _Mapping]] = ...) -> None: ...

class UpdateApiKeyCapsResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: ApiKey
    def __init__(self, key: _Optional[_Union[ApiKey, _Mapping]] = ...) -> None: ...

class GetUsageRequest(_message.Message):
    __slots__ = ("account_id", "query")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    query: _usage_pb2.UsageQuery
    def __init__(self, account_id: _Optional[str] = ..., query: _Optional[_Union[_usage_pb2.UsageQuery, _Mapping]] = ...) -> None: ...

class GetUsageResponse(_message.Message):
    __slots__ = ("report",)
    REPORT_FIELD_NUMBER: _ClassVar[int]
    report: _usage_pb2.UsageReport
    def __init__(self, report: _Optional[_Union[_usage_pb2.UsageReport, _Mapping]] = ...) -> None: ...

class GetAccountUsageRequest(_message.Message):
    __slots__ = ("account_id", "query")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    query: _usage_pb2.UsageQuery
    def __init__(self, account_id: _Optional[str] = ..., query: _Optional[_Union[_usage_pb2.UsageQuery, _Mapping]] = ...) -> None: ...

class GetAccountUsageResponse(_message.Message):
    __slots__ = ("report",)
    REPORT_FIELD_NUMBER: _ClassVar[int]
    report: _usage_pb2.UsageReport
    def __init__(self, report: _Optional[_Union[_usage_pb2.UsageReport, _Mapping]] = ...) -> None: ...

class ClaimIdempotencyKeyRequest(_message.Message):
    __slots__ = ("account_id", "key", "fingerprint", "owner", "running_seconds")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    RUNNING_SECONDS_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    key: str
    fingerprint: bytes
    owner: str
    running_seconds: int
    def __init__(self, account_id: _Optional[str] = ..., key: _Optional[str] = ..., fingerprint: _Optional[bytes] = ..., owner: _Optional[str] = ..., running_seconds: _Optional[int] = ...) -> None: ...

class ClaimIdempotencyKeyResponse(_message.Message):
    __slots__ = ("claimed", "state", "fingerprint", "response")
    CLAIMED_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    claimed: bool
    state: IdempotencyState
    fingerprint: bytes
    response: bytes
    def __init__(self, claimed: _Optional[bool] = ..., state: _Optional[_Union[IdempotencyState, str]] = ..., fingerprint: _Optional[bytes] = ..., response: _Optional[bytes] = ...) -> None: ...

class CompleteIdempotencyKeyRequest(_message.Message):
    __slots__ = ("account_id", "key", "owner", "state", "response", "retain_seconds")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    RETAIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    key: str
    owner: str
    state: IdempotencyState
    response: bytes
    retain_seconds: int
    def __init__(self, account_id: _Optional[str] = ..., key: _Optional[str] = ..., owner: _Optional[str] = ..., state: _Optional[_Union[IdempotencyState, str]] = ..., response: _Optional[bytes] = ..., retain_seconds: _Optional[int] = ...) -> None: ...

class CompleteIdempotencyKeyResponse(_message.Message):
    __slots__ = ("completed",)
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    completed: bool
    def __init__(self, completed: _Optional[bool] = ...) -> None: ...

class ReleaseIdempotencyKeyRequest(_message.Message):
    __slots__ = ("account_id", "key", "owner")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    key: str
    owner: str
    def __init__(self, account_id: _Optional[str] = ..., key: _Optional[str] = ..., owner: _Optional[str] = ...) -> None: ...

class ReleaseIdempotencyKeyResponse(_message.Message):
    __slots__ = ("released",)
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    released: bool
    def __init__(self, released: _Optional[bool] = ...) -> None: ...
