"""Spending caps per API key: the decisions both request paths (SQLite and
PostgreSQL) take the same way, on rows read under their write lock
(docs/billing.md, "Spending caps"). What each operation does for a key:

  Reserve naming a key  checks its caps: the worst case, plus the key's open
                        holds, plus its spend (today's, for the daily cap) must
                        fit under each cap; the hold records the key
                        (holds.api_key_id)
  Settle of such a hold adds the charge to the key's spend
  Charge naming a key   adds the charge to the key's spend, never refused for it
                        (the images exist), late or not

A key's rows change only in transactions that hold its account's lock (a
batch locks every account it touches first, and a key belongs to one
account), so what a Reserve reads of them cannot change before it commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from billing_svc.domain import KeySpend, SpendingCaps
from quantized_runtime.errors import Reason, ServiceError

DAILY = "daily"
TOTAL = "total"


@dataclass(frozen=True, slots=True)
class KeyState:
    """An api_keys row, and its open holds, as a Reserve needs them."""

    account_id: str
    caps: SpendingCaps
    spent_total: int
    spent_on_day: int
    spend_day: date | None
    held: int

    def spend(self, today: date) -> KeySpend:
        """The spend as counted today: another day's figure is 0 today."""
        return KeySpend(self.spent_total, self.spent_on_day if self.spend_day == today else 0,
                        self.held)


def stored_cap(value: int | None) -> int | None:
    """A cap column's value: NULL for no cap, which 0 also means."""
    return value or None


def _key_refusal(key_id: str, account_id: str, state: KeyState | None) -> ServiceError | None:
    """A Reserve naming a key that is not the account's own."""
    if state is None or state.account_id != account_id:
        return ServiceError(Reason.INVALID_REQUEST,
                            f"API key {key_id!r} is not a key of account {account_id!r}",
                            field="key_id")
    return None


def reserve_refusal(key_id: str, account_id: str, state: KeyState | None, amount: int,
                    today: date) -> ServiceError | None:
    """Why a Reserve of `amount` naming `key_id` may not be made (another
    account's key, or over one of its caps); None when it may."""
    refusal = _key_refusal(key_id, account_id, state)
    if refusal is not None or state is None:
        return refusal
    return _cap_refusal(key_id, state, amount, today)


def _cap_refusal(key_id: str, state: KeyState, amount: int, today: date) -> ServiceError | None:
    """INSUFFICIENT_CREDITS naming the key's cap when `amount` more would take the
    key past it, the tighter cap when both would; None when it fits."""
    spend = state.spend(today)
    left = []
    if state.caps.daily is not None:
        left.append((state.caps.daily - spend.today - spend.held, DAILY, state.caps.daily))
    if state.caps.total is not None:
        left.append((state.caps.total - spend.total - spend.held, TOTAL, state.caps.total))
    if not left:
        return None
    available, which, cap = min(left)
    if amount <= available:
        return None
    period = "per UTC day" if which == DAILY else "in total"
    return ServiceError(
        Reason.INSUFFICIENT_CREDITS,
        f"insufficient credits: the request may cost up to {amount} micro-credits and API key "
        f"{key_id!r} has {max(available, 0)} left under its {which} spending cap of {cap} "
        f"micro-credits ({period})",
        metadata={"required_micro_credits": str(amount),
                  "available_micro_credits": str(max(available, 0)),
                  "key_id": key_id, "cap": which, "cap_micro_credits": str(cap)})
