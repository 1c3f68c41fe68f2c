"""Billing's domain records and input limits (no gRPC, no SQL)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction

from quantized_runtime.errors import ServiceError

# No single movement may exceed this (62.5 million USD at the default rate), so
# sums of many movements stay far inside a signed 64-bit integer.
MAX_AMOUNT_MICRO_CREDITS = 10**15
MAX_NAME_LENGTH = 200
MAX_REQUEST_ID_LENGTH = 200
# Larger than any sensible limit, and inside the proto's int32.
MAX_RATE_LIMIT = 10_000_000
RECENT_USAGE_LIMIT = 20


def new_id(kind: str) -> str:
    return f"{kind}_{uuid.uuid4().hex}"


@dataclass(frozen=True, slots=True)
class LimitSetting:
    """Rate limits stored on a key or an account; None takes billing's default, 0 is no limit."""

    requests_per_minute: int | None = None
    max_concurrent_requests: int | None = None


@dataclass(frozen=True, slots=True)
class LimitChange:
    """An operator's update: `use_defaults` clears both, then each value given is stored."""

    limits: LimitSetting
    use_defaults: bool = False


@dataclass(frozen=True, slots=True)
class RateLimits:
    """The limits in force, defaults filled in; 0 is no limit."""

    requests_per_minute: int = 0
    max_concurrent_requests: int = 0

    def over(self, stored: LimitSetting) -> RateLimits:
        """What `stored` makes of these defaults: each value it sets replaces one."""
        return RateLimits(
            self.requests_per_minute if stored.requests_per_minute is None else stored.requests_per_minute,
            (self.max_concurrent_requests if stored.max_concurrent_requests is None
             else stored.max_concurrent_requests))


@dataclass(frozen=True, slots=True)
class LimitDefaults:
    """Billing's defaults for keys and accounts that store no limit of their own."""

    key: RateLimits = RateLimits()
    account: RateLimits = RateLimits()


@dataclass(frozen=True, slots=True)
class SpendingCaps:
    """A key's spending caps in micro-credits; None is no cap."""

    daily: int | None = None
    total: int | None = None

    @property
    def any(self) -> bool:
        return self.daily is not None or self.total is not None


@dataclass(frozen=True, slots=True)
class CapChange:
    """An operator's update: each cap given replaces the stored one (0: no cap)."""

    daily: int | None = None
    total: int | None = None


@dataclass(frozen=True, slots=True)
class KeySpend:
    """What a key has spent as its caps count it: charged in all and on the
    current UTC day, and the worst cases of its open holds."""

    total: int = 0
    today: int = 0
    held: int = 0


@dataclass(frozen=True, slots=True)
class Identity:
    account_id: str
    unlimited: bool
    key_id: str = ""
    # What the key's and the account's rows store (a JWT caller has no key).
    key_limits: LimitSetting = LimitSetting()
    account_limits: LimitSetting = LimitSetting()
    key_caps: SpendingCaps = SpendingCaps()


@dataclass(frozen=True, slots=True)
class Account:
    account_id: str
    name: str
    unlimited: bool
    balance: int
    held: int
    created_at: datetime
    limits: LimitSetting = LimitSetting()


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    key_id: str
    account_id: str
    prefix: str
    revoked: bool
    created_at: datetime
    limits: LimitSetting = LimitSetting()
    caps: SpendingCaps = SpendingCaps()
    spend: KeySpend = KeySpend()


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A new key: the secret is returned to the caller once and never stored."""

    secret: str
    info: ApiKeyInfo


@dataclass(frozen=True, slots=True)
class Hold:
    hold_id: str
    account_id: str
    request_id: str
    amount: int
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Usage:
    """What the edge reports when it settles a request."""

    model_id: str = ""
    provider: str = ""
    images: int = 0
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    megapixels: float | None = None
    user: str | None = None


@dataclass(frozen=True, slots=True)
class UsageEntry:
    time: datetime
    request_id: str
    usage: Usage
    credits: int


@dataclass(frozen=True, slots=True)
class Closed:
    """The outcome of Settle or Release; balance and spendable (balance plus
    held: credits granted minus charged) are None for unlimited accounts."""

    charged: int
    balance: int | None
    spendable: int | None


@dataclass(frozen=True, slots=True)
class ReserveOp:
    """A Reserve inside a ledger batch; key_id is empty for a JWT caller."""

    account_id: str
    amount: int
    request_id: str
    key_id: str = ""


@dataclass(frozen=True, slots=True)
class SettleOp:
    """A Settle inside a ledger batch."""

    hold_id: str
    amount: int
    usage: Usage


@dataclass(frozen=True, slots=True)
class ReleaseOp:
    """A Release inside a ledger batch."""

    hold_id: str


@dataclass(frozen=True, slots=True)
class AcquireLeaseOp:
    """Place a lease: the largest multiple of unit within want and the policy's
    share of the available balance, if that is at least minimum."""

    account_id: str
    holder: str
    request_id: str
    minimum: int
    want: int
    unit: int


@dataclass(frozen=True, slots=True)
class ExtendLeaseOp:
    """Add to an open lease (sized as AcquireLeaseOp) and give it a new expiry."""

    lease_id: str
    minimum: int
    want: int
    unit: int


@dataclass(frozen=True, slots=True)
class ChargeOp:
    """One request's actual price, from its lease when the lease can take it,
    otherwise from the balance (a late charge). lease_id may be empty."""

    account_id: str
    request_id: str
    lease_id: str
    amount: int
    usage: Usage
    # The caller's API key, whose spend the charge counts toward; empty for a JWT caller.
    key_id: str = ""


@dataclass(frozen=True, slots=True)
class ReturnLeaseOp:
    """Close an open lease, its unspent part back in the balance."""

    lease_id: str


@dataclass(frozen=True, slots=True)
class Lease:
    """A lease after AcquireLease or ExtendLease. spendable is credits granted
    minus credits charged (None for unlimited accounts)."""

    lease_id: str
    account_id: str
    amount: int
    charged: int
    expires_at: datetime
    spendable: int | None


@dataclass(frozen=True, slots=True)
class Charged:
    """The outcome of a Charge. repeated: the request id was charged before and
    this is that first result (nothing written now)."""

    amount: int
    late: bool
    spendable: int | None
    repeated: bool
    # The charge named a key that has a spending cap (storage/key_caps.py).
    key_capped: bool = False


@dataclass(frozen=True, slots=True)
class LeaseReturned:
    returned: int
    spendable: int | None


@dataclass(frozen=True, slots=True)
class LeasePolicy:
    """How large and how long-lived a lease may be (billing's settings)."""

    # Of the available balance, at most this part goes into one lease, so
    # several edges racing for one account each get some and none gets it all.
    share: Fraction
    ttl: timedelta


def lease_size(available: int | None, share: Fraction, minimum: int, want: int,
               unit: int) -> int | None:
    """What a lease may add: the largest multiple of unit (0 or 1: any amount)
    that is at most want and at most share of the available balance (None: an
    unlimited account, no cap), or None when that is less than minimum."""
    cap = want if available is None else min(want, max(available, 0) * share.numerator
                                             // share.denominator)
    step = max(unit, 1)
    size = cap - cap % step
    return size if size >= minimum else None


LedgerOp = (ReserveOp | SettleOp | ReleaseOp | AcquireLeaseOp | ExtendLeaseOp | ChargeOp
            | ReturnLeaseOp)
# Per operation of a batch: its value (Hold for a Reserve, Closed for a Settle or
# Release, Lease, Charged or LeaseReturned for the lease operations) or why it was
# refused (nothing written for it).
LedgerOutcome = Hold | Closed | Lease | Charged | LeaseReturned | ServiceError


@dataclass(frozen=True, slots=True)
class AccountView:
    account: Account
    keys: list[ApiKeyInfo]
    open_holds: list[Hold]
    recent_usage: list[UsageEntry]
