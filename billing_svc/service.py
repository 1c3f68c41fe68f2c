"""Billing's use cases: input checks, key issuance, token verification, hold
lifetimes. Storage is behind MoneyStore (the request path) and AdminStore
(administration and reaping); nothing here knows gRPC."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import cast

from billing_svc import api_keys
from billing_svc.domain import (
    MAX_AMOUNT_MICRO_CREDITS,
    MAX_NAME_LENGTH,
    MAX_RATE_LIMIT,
    MAX_REQUEST_ID_LENGTH,
    RECENT_USAGE_LIMIT,
    Account,
    AccountView,
    AcquireLeaseOp,
    ApiKeyInfo,
    CapChange,
    ChargeOp,
    Charged,
    ExtendLeaseOp,
    Hold,
    Identity,
    IssuedKey,
    LimitChange,
    LimitDefaults,
    RateLimits,
    LedgerOp,
    LedgerOutcome,
    ReleaseOp,
    ReserveOp,
    ReturnLeaseOp,
    SettleOp,
    Usage,
    new_id,
)
from billing_svc.jwt_verifier import JwtVerifier
from billing_svc.metrics import HOLDS_EXPIRED, LATE_CHARGES, LEDGER_BATCH_OPERATIONS, LEDGER_COMMIT_SECONDS
from billing_svc.storage.admin_store import AdminStore
from billing_svc.storage.money_store import MoneyStore
from billing_svc.storage.schema import ID_LENGTH
from billing_svc.storage.usage_store import UsageStore
from billing_svc.usage import UsageQuery, UsageReport, checked_window, report
from quantized_runtime.clock import utc_now
from quantized_runtime.errors import Reason, ServiceError

log = logging.getLogger("quantized.billing.leases")

# Longer than any real key or JWT we accept; bounds the work an attacker can cause.
MAX_TOKEN_LENGTH = 8192
# Usage labels are descriptive; an over-long one is cut rather than failing a
# settlement for an image that was already generated.
USAGE_LABEL_LIMITS = {"model_id": 200, "provider": 64, "user": 256}
# The holds.holder column.
MAX_HOLDER_LENGTH = 200


def _invalid(field: str, message: str) -> ServiceError:
    return ServiceError(Reason.INVALID_REQUEST, message, field=field)


def _require_id(value: str, field: str) -> str:
    value = value.strip()
    if not value:
        raise _invalid(field, f"{field} is required")
    return value


def _check_amount(value: int, field: str, *, allow_zero: bool) -> int:
    if value < 0 or (value == 0 and not allow_zero):
        bound = "zero or more" if allow_zero else "a positive integer"
        raise _invalid(field, f"{field} must be {bound} (micro-credits), got {value}")
    if value > MAX_AMOUNT_MICRO_CREDITS:
        raise _invalid(field, f"{field} must be at most {MAX_AMOUNT_MICRO_CREDITS}, got {value}")
    return value


def _check_usage(usage: Usage) -> Usage:
    for name in ("images", "input_tokens", "output_tokens", "total_tokens"):
        value = getattr(usage, name)
        if value is not None and value < 0:
            raise _invalid(f"usage.{name}", f"usage.{name} must not be negative")
    if usage.megapixels is not None and not (math.isfinite(usage.megapixels)
                                             and usage.megapixels >= 0):
        raise _invalid("usage.megapixels", "usage.megapixels must be a finite number >= 0")
    user = usage.user[:USAGE_LABEL_LIMITS["user"]] if usage.user else None
    return Usage(model_id=usage.model_id[:USAGE_LABEL_LIMITS["model_id"]],
                 provider=usage.provider[:USAGE_LABEL_LIMITS["provider"]],
                 images=usage.images, input_tokens=usage.input_tokens,
                 output_tokens=usage.output_tokens, total_tokens=usage.total_tokens,
                 megapixels=usage.megapixels, user=user)


def _require_request_id(value: str) -> str:
    request_id = _require_id(value, "request_id")
    if len(request_id) > MAX_REQUEST_ID_LENGTH:
        raise _invalid("request_id", f"request_id is longer than {MAX_REQUEST_ID_LENGTH}")
    return request_id


def _checked_limits(change: LimitChange) -> LimitChange:
    for name in ("requests_per_minute", "max_concurrent_requests"):
        value = getattr(change.limits, name)
        if value is not None and not 0 <= value <= MAX_RATE_LIMIT:
            raise _invalid(f"limits.{name}", f"limits.{name} must be 0 (no limit) to {MAX_RATE_LIMIT}, "
                                             f"got {value}")
    return change


def _checked_caps(change: CapChange) -> CapChange:
    for name in ("daily", "total"):
        value = getattr(change, name)
        if value is not None:
            _check_amount(value, f"caps.{name}_micro_credits", allow_zero=True)
    return change


def _checked_reserve(op: ReserveOp) -> ReserveOp:
    account_id = _require_id(op.account_id, "account_id")
    _check_amount(op.amount, "amount_micro_credits", allow_zero=True)
    return ReserveOp(account_id, op.amount, _require_request_id(op.request_id), op.key_id.strip())


def _checked_settle(op: SettleOp) -> SettleOp:
    hold_id = _require_id(op.hold_id, "hold_id")
    _check_amount(op.amount, "amount_micro_credits", allow_zero=True)
    return SettleOp(hold_id, op.amount, _check_usage(op.usage))


def _checked_release(op: ReleaseOp) -> ReleaseOp:
    return ReleaseOp(_require_id(op.hold_id, "hold_id"))


def _check_lease_size(minimum: int, want: int, unit: int) -> None:
    _check_amount(minimum, "min_micro_credits", allow_zero=True)
    _check_amount(want, "want_micro_credits", allow_zero=True)
    _check_amount(unit, "unit_micro_credits", allow_zero=True)
    if want < minimum:
        raise _invalid("want_micro_credits",
                       f"want_micro_credits ({want}) is less than min_micro_credits ({minimum})")


def _checked_acquire_lease(op: AcquireLeaseOp) -> AcquireLeaseOp:
    account_id = _require_id(op.account_id, "account_id")
    holder = op.holder.strip()
    if len(holder) > MAX_HOLDER_LENGTH:
        raise _invalid("holder", f"holder is longer than {MAX_HOLDER_LENGTH}")
    _check_lease_size(op.minimum, op.want, op.unit)
    return AcquireLeaseOp(account_id, holder, _require_request_id(op.request_id), op.minimum,
                          op.want, op.unit)


def _checked_extend_lease(op: ExtendLeaseOp) -> ExtendLeaseOp:
    lease_id = _require_id(op.lease_id, "lease_id")
    _check_lease_size(op.minimum, op.want, op.unit)
    return ExtendLeaseOp(lease_id, op.minimum, op.want, op.unit)


def _checked_charge(op: ChargeOp) -> ChargeOp:
    account_id = _require_id(op.account_id, "account_id")
    _check_amount(op.amount, "amount_micro_credits", allow_zero=True)
    # A Charge is never refused for its key (the money is spent); an id longer than
    # billing's own names no key, and is cut so that it cannot fail the batch's insert.
    return ChargeOp(account_id, _require_request_id(op.request_id), op.lease_id.strip(),
                    op.amount, _check_usage(op.usage), op.key_id.strip()[:ID_LENGTH])


def _checked_return_lease(op: ReturnLeaseOp) -> ReturnLeaseOp:
    return ReturnLeaseOp(_require_id(op.lease_id, "lease_id"))


def _checked(op: LedgerOp) -> LedgerOp:
    """The operation as storage takes it, or the ServiceError that refuses it."""
    if isinstance(op, ReserveOp):
        return _checked_reserve(op)
    if isinstance(op, SettleOp):
        return _checked_settle(op)
    if isinstance(op, ReleaseOp):
        return _checked_release(op)
    if isinstance(op, AcquireLeaseOp):
        return _checked_acquire_lease(op)
    if isinstance(op, ExtendLeaseOp):
        return _checked_extend_lease(op)
    if isinstance(op, ChargeOp):
        return _checked_charge(op)
    return _checked_return_lease(op)


def _amount_conflict(op: ReserveOp, hold: Hold) -> ServiceError | None:
    """A request id already holding another amount (storage returned that hold and
    wrote nothing)."""
    if hold.amount == op.amount:
        return None
    return _invalid("request_id", f"request id {op.request_id!r} already holds "
                                  f"{hold.amount} micro-credits, not {op.amount}")


class Billing:
    def __init__(self, money: MoneyStore, admin: AdminStore, usage: UsageStore, jwt_verifier: JwtVerifier,
                 hold_ttl: timedelta, clock: Callable[[], datetime] = utc_now,
                 limit_defaults: LimitDefaults = LimitDefaults()) -> None:
        self._money = money
        self._limit_defaults = limit_defaults
        self._admin = admin
        self._usage = usage
        self._jwt = jwt_verifier
        self._hold_ttl = hold_ttl
        self._clock = clock
        # Charges applied to a balance because their lease could not take them
        # (closed, expired, short, or another account's), since start; each one
        # is also logged. For a metrics exporter to read.
        self.late_charges = 0

    # Request path

    async def authenticate(self, token: str) -> Identity:
        token = token.strip()
        if not token:
            raise ServiceError(Reason.UNAUTHENTICATED, "missing bearer token")
        if len(token) > MAX_TOKEN_LENGTH:
            raise ServiceError(Reason.UNAUTHENTICATED, "invalid bearer token: too long")
        if api_keys.looks_like_key(token):
            identity = await self._money.identity_for_key_hash(api_keys.hash_key(token))
            if identity is None:
                raise ServiceError(Reason.UNAUTHENTICATED, "invalid, unknown or revoked API key")
            return identity
        account_id = self._jwt.account_id(token)
        identity = await self._money.identity_for_account(account_id)
        if identity is None:
            raise ServiceError(Reason.UNAUTHENTICATED, "invalid bearer token: unknown account")
        return identity

    def limits_in_force(self, identity: Identity) -> tuple[RateLimits, RateLimits]:
        """The key's and the account's limits with the defaults filled in; a JWT
        caller has no key, so no key limit."""
        key = self._limit_defaults.key.over(identity.key_limits) if identity.key_id else RateLimits()
        return key, self._limit_defaults.account.over(identity.account_limits)

    async def apply_batch(self, operations: Sequence[LedgerOp]) -> list[LedgerOutcome]:
        """Reserves, Settles, Releases and the lease operations in one storage
        transaction, one outcome per operation, in order. Each operation is checked
        first; one that fails its checks gets that error and never reaches storage.
        Storage applies the rest in order, so an operation sees the batch's earlier
        ones (two Reserves on one account draw on one balance)."""
        outcomes: list[LedgerOutcome | None] = [None] * len(operations)
        accepted: list[tuple[int, LedgerOp]] = []
        for index, op in enumerate(operations):
            try:
                accepted.append((index, _checked(op)))
            except ServiceError as refusal:
                outcomes[index] = refusal
        LEDGER_BATCH_OPERATIONS.observe(len(operations))
        if accepted:
            now = self._clock()
            with LEDGER_COMMIT_SECONDS.time():
                stored = await self._money.apply_batch([op for _, op in accepted], now,
                                                      now + self._hold_ttl)
            for (index, op), outcome in zip(accepted, stored, strict=True):
                if isinstance(op, ReserveOp) and isinstance(outcome, Hold):
                    outcome = _amount_conflict(op, outcome) or outcome
                if isinstance(op, ChargeOp) and isinstance(outcome, Charged):
                    self._note_late_charge(op, outcome)
                outcomes[index] = outcome
        # Every slot was filled above: by its refusal or by storage's outcome.
        return cast(list[LedgerOutcome], outcomes)

    def _note_late_charge(self, op: ChargeOp, charged: Charged) -> None:
        """Count and log a late charge once: its repeats wrote nothing."""
        if not charged.late or charged.repeated:
            return
        self.late_charges += 1
        LATE_CHARGES.inc()
        log.warning("late charge applied to the balance", extra={"fields": {
            "account_id": op.account_id, "lease_id": op.lease_id,
            "charge_request_id": op.request_id, "micro_credits": charged.amount,
            "spendable_micro_credits": charged.spendable,
            "late_charges_total": self.late_charges}})

    async def expire_due_holds(self, batch_size: int) -> int:
        expired = await self._admin.expire_due_holds(self._clock(), batch_size)
        HOLDS_EXPIRED.inc(expired)
        return expired

    async def open_holds(self) -> dict[str, int]:
        """Open holds by kind (`request`, `lease`)."""
        return await self._admin.count_open_holds()

    # Administration

    async def create_account(self, name: str, credits: int,
                             unlimited: bool) -> tuple[Account, IssuedKey]:
        name = name.strip()
        if not name:
            raise _invalid("name", "name is required")
        if len(name) > MAX_NAME_LENGTH:
            raise _invalid("name", f"name is longer than {MAX_NAME_LENGTH} characters")
        _check_amount(credits, "credits_micro_credits", allow_zero=True)
        if unlimited and credits:
            raise _invalid("credits_micro_credits",
                           "an unlimited account takes no credits; give one or the other")
        secret, key_id = api_keys.generate_key(), new_id("key")
        account, key = await self._admin.create_account(
            name, credits, unlimited, key_id, api_keys.display_prefix(secret),
            api_keys.hash_key(secret), self._clock())
        return account, IssuedKey(secret=secret, info=key)

    async def create_key(self, account_id: str, caps: CapChange = CapChange()) -> IssuedKey:
        account_id = _require_id(account_id, "account_id")
        caps = _checked_caps(caps)
        secret, key_id = api_keys.generate_key(), new_id("key")
        info = await self._admin.create_key(account_id, key_id, api_keys.display_prefix(secret),
                                           api_keys.hash_key(secret), self._clock(), caps)
        return IssuedKey(secret=secret, info=info)

    async def update_key_caps(self, key_id: str, change: CapChange) -> ApiKeyInfo:
        """The key's new caps apply to its next Reserve (docs/billing.md, "Spending caps")."""
        return await self._admin.update_key_caps(_require_id(key_id, "key_id"),
                                                 _checked_caps(change), self._clock())

    async def revoke_key(self, key_id: str) -> ApiKeyInfo:
        return await self._admin.revoke_key(_require_id(key_id, "key_id"), self._clock())

    async def update_key_limits(self, key_id: str, change: LimitChange) -> ApiKeyInfo:
        return await self._admin.update_key_limits(_require_id(key_id, "key_id"), _checked_limits(change),
                                                   self._clock())

    async def update_account_limits(self, account_id: str, change: LimitChange) -> Account:
        return await self._admin.update_account_limits(_require_id(account_id, "account_id"),
                                                       _checked_limits(change))

    async def grant(self, account_id: str, amount: int) -> Account:
        account_id = _require_id(account_id, "account_id")
        _check_amount(amount, "amount_micro_credits", allow_zero=False)
        return await self._admin.grant(account_id, amount, self._clock())

    async def account_view(self, account_id: str) -> AccountView:
        return await self._admin.account_view(_require_id(account_id, "account_id"),
                                             RECENT_USAGE_LIMIT, self._clock())

    # Usage reports: for the account's owner (through the edge) and for operators alike.

    async def usage_report(self, account_id: str, query: UsageQuery) -> UsageReport:
        account_id = _require_id(account_id, "account_id")
        now = self._clock()
        window = checked_window(query, now)
        return report(window, await self._usage.usage_page(account_id, window, now.date()))
