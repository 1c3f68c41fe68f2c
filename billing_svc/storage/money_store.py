"""The money path's storage interface: what the request path (Authenticate and
Ledger batches) asks of billing's database, and
the refusals every implementation raises alike. Each supported database has
one implementation written for it (sqlite_money_store.py on a SQLite file,
postgres_money_store.py on PostgreSQL), so this stays the one narrow surface
that the use cases depend on.

Ledger entries (signed, in the account's available balance):
  grant   +amount          credits added by an operator
  hold    -amount          Reserve: the worst case leaves the available balance
  settle  +(held-charged)  Settle: the unused part comes back; the charge is
                           what the hold row and this row leave behind together
  release +amount          Release: everything comes back
  expire  +amount          the reaper closed a hold nobody settled
So the balance always equals the sum of the ledger, holds included.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from billing_svc.domain import Identity, LedgerOp, LedgerOutcome
from quantized_runtime.errors import Reason, ServiceError

OPEN = "open"


class MoneyStore(Protocol):
    """Every method is one transaction (a batch: one for the whole batch); a
    method that raises has written nothing."""

    async def identity_for_key_hash(self, secret_hash: str) -> Identity | None: ...

    async def identity_for_account(self, account_id: str) -> Identity | None: ...

    async def apply_batch(self, operations: Sequence[LedgerOp], now: datetime,
                          expires_at: datetime) -> list[LedgerOutcome]:
        """The operations in order, one outcome each: the value, or the ServiceError
        of a refusal (which wrote nothing). Any other exception fails the batch."""
        ...


def not_found(what: str, identifier: str) -> ServiceError:
    return ServiceError(Reason.NOT_FOUND, f"{what} {identifier!r} not found")


def insufficient_credits(amount: int, available: int) -> ServiceError:
    return ServiceError(
        Reason.INSUFFICIENT_CREDITS,
        f"insufficient credits: the request may cost up to {amount} micro-credits "
        f"and the account has {available} available",
        metadata={"required_micro_credits": str(amount),
                  "available_micro_credits": str(available)})


def unclosable_hold(hold_id: str, status: str, expires_at: datetime, amount: int,
                    now: datetime, charged: int) -> ServiceError:
    """Why an existing hold could not be closed."""
    if status != OPEN:
        return ServiceError(Reason.HOLD_CLOSED, f"hold {hold_id!r} is already {status}")
    if expires_at <= now:
        return ServiceError(Reason.HOLD_CLOSED, f"hold {hold_id!r} has expired")
    if charged > amount:
        return ServiceError(
            Reason.INVALID_REQUEST,
            f"cannot charge {charged} micro-credits against a hold of {amount}",
            field="amount_micro_credits")
    return ServiceError(Reason.INTERNAL, f"hold {hold_id!r} could not be closed")
