"""Billing's domain records and input limits (no gRPC, no SQL)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from quantized_runtime.errors import ServiceError

# No single movement may exceed this (62.5 million USD at the default rate), so
# sums of many movements stay far inside a signed 64-bit integer.
MAX_AMOUNT_MICRO_CREDITS = 10**15
MAX_NAME_LENGTH = 200
MAX_REQUEST_ID_LENGTH = 200
RECENT_USAGE_LIMIT = 20


def new_id(kind: str) -> str:
    return f"{kind}_{uuid.uuid4().hex}"


@dataclass(frozen=True, slots=True)
class Identity:
    account_id: str
    unlimited: bool
    key_id: str = ""


@dataclass(frozen=True, slots=True)
class Account:
    account_id: str
    name: str
    unlimited: bool
    balance: int
    held: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    key_id: str
    account_id: str
    prefix: str
    revoked: bool
    created_at: datetime


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
    """The outcome of Settle or Release; balance is None for unlimited accounts."""

    charged: int
    balance: int | None


@dataclass(frozen=True, slots=True)
class ReserveOp:
    """A Reserve inside a ledger batch."""

    account_id: str
    amount: int
    request_id: str


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


LedgerOp = ReserveOp | SettleOp | ReleaseOp
# Per operation of a batch: its value (Hold for a Reserve, Closed otherwise) or why
# it was refused (nothing written for it).
LedgerOutcome = Hold | Closed | ServiceError


@dataclass(frozen=True, slots=True)
class AccountView:
    account: Account
    keys: list[ApiKeyInfo]
    open_holds: list[Hold]
    recent_usage: list[UsageEntry]
