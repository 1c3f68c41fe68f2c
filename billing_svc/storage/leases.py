"""Decisions about credit leases that both request paths (SQLite and PostgreSQL)
take the same way, on rows they have read under their write lock. The rows each
lease operation writes are listed in docs/billing.md ("Credit leases"):

  AcquireLease  holds (kind 'lease', charged 0); ledger hold -amount
  ExtendLease   holds.amount and expires_at; ledger hold -added (none when 0)
  Charge        from the lease: holds.charged and accounts.held, no ledger row
                (the money left the balance when the lease was placed);
                otherwise from the balance: ledger charge -amount;
                either way one usage record
  ReturnLease   holds.status 'released'; ledger release +unspent
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction

from billing_svc.domain import ChargeOp
from billing_svc.storage.money_store import OPEN, not_found
from quantized_runtime.errors import Reason, ServiceError

LEASE = "lease"
REQUEST = "request"


@dataclass(frozen=True, slots=True)
class LeaseState:
    """A holds row as a lease operation needs it."""

    account_id: str
    kind: str
    status: str
    amount: int
    charged: int
    expires_at: datetime

    @property
    def unspent(self) -> int:
        return self.amount - self.charged


def spendable(balance: int, held: int, unlimited: bool) -> int | None:
    """Credits granted minus credits charged: what holds and leases set aside is
    not spent. None for unlimited accounts."""
    return None if unlimited else balance + held


def open_lease_refusal(lease_id: str, state: LeaseState | None,
                       now: datetime) -> ServiceError | None:
    """Why ExtendLease or ReturnLease cannot use this lease, or None when it is open."""
    if state is None or state.kind != LEASE:
        return not_found("lease", lease_id)
    if state.status != OPEN:
        return ServiceError(Reason.HOLD_CLOSED, f"lease {lease_id!r} is already {state.status}")
    if state.expires_at <= now:
        return ServiceError(Reason.HOLD_CLOSED, f"lease {lease_id!r} has expired")
    return None


def lease_takes_charge(state: LeaseState | None, account_id: str, amount: int,
                       now: datetime) -> bool:
    """Whether a Charge comes out of this lease: the account's own, open,
    unexpired, with enough unspent. Otherwise the Charge is taken from the
    balance, so another account's lease is never spent."""
    return (state is not None and state.kind == LEASE and state.account_id == account_id
            and state.status == OPEN and state.expires_at > now and state.unspent >= amount)


def charged_late(from_lease: bool, op: ChargeOp, *, unlimited: bool) -> bool:
    """A Charge taken from the balance because the lease it named could not take
    it (or, on a limited account, because it named none). A zero charge takes
    nothing and is never late."""
    return not from_lease and op.amount > 0 and (bool(op.lease_id) or not unlimited)


def lease_refused(minimum: int, available: int, share: Fraction) -> ServiceError:
    """Nothing was written: the caller falls back to exact per-request holds."""
    return ServiceError(
        Reason.INSUFFICIENT_CREDITS,
        f"insufficient credits for a lease: it must be at least {minimum} micro-credits "
        f"and may take at most {float(share):g} of the {available} available",
        metadata={"required_micro_credits": str(minimum),
                  "available_micro_credits": str(available)})


def request_id_taken(request_id: str, kind: str) -> ServiceError:
    """A request id names one hold: a request's or a lease's, never both."""
    return ServiceError(Reason.INVALID_REQUEST,
                        f"request id {request_id!r} already names a {kind} hold",
                        field="request_id")


def lease_given_as_hold(hold_id: str) -> ServiceError:
    """Settle and Release close request holds only: a lease has charges against
    it that they would not account for."""
    return ServiceError(Reason.INVALID_REQUEST,
                        f"{hold_id!r} is a lease: it is charged with Charge and closed "
                        "with ReturnLease", field="hold_id")
