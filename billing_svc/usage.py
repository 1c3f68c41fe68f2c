"""Usage reports (GET /v1/usage, `quantized admin usage`): the rules of the query
and of its page cursor, and the records of a report. No gRPC, no SQL.

A report totals an account's usage records (one per charged request, written by
Settle and Charge) per bucket over [start, end): per UTC day, per model or per
API key. Pages follow the buckets' order; a page's cursor names the last bucket
it carried, so the next page starts after it however the records change meanwhile.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from billing_svc.domain import KeySpend, SpendingCaps
from quantized_runtime.errors import Reason, ServiceError

DEFAULT_RANGE = timedelta(days=30)
MAX_RANGE = timedelta(days=366)
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# Longer than any cursor this module writes (a key id or a model id of 200 characters).
MAX_CURSOR_LENGTH = 1024


class Grouping(enum.StrEnum):
    DAY = "day"
    MODEL = "model"
    KEY = "key"


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """What the caller asked for, as sent; `limit` None is "not given"."""

    start: str = ""
    end: str = ""
    grouping: Grouping = Grouping.DAY
    limit: int | None = None
    page: str = ""


@dataclass(frozen=True, slots=True)
class UsageWindow:
    """A checked query: UTC bounds, the grouping, the page size and the last
    bucket key of the previous page (None: the first page)."""

    start: datetime
    end: datetime
    grouping: Grouping
    limit: int
    after: str | None


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """One bucket: `key` is the day (YYYY-MM-DD), the model id, or the API key id
    ("" for requests made with a JWT)."""

    key: str
    requests: int
    images: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    megapixels: float
    credits: int
    # Group by key only: the key's display prefix ("" without a key), its caps
    # and its spend as the caps count it today.
    key_prefix: str = ""
    caps: SpendingCaps = SpendingCaps()
    spend: KeySpend = KeySpend()


@dataclass(frozen=True, slots=True)
class UsagePage:
    buckets: list[UsageTotals]
    has_more: bool
    # Credits granted minus charged; None for unlimited accounts.
    credits_remaining: int | None
    unlimited: bool


@dataclass(frozen=True, slots=True)
class UsageReport:
    window: UsageWindow
    page: UsagePage
    # The cursor of the next page; "" when this is the last.
    next_page: str


def _invalid(field: str, message: str) -> ServiceError:
    return ServiceError(Reason.INVALID_REQUEST, message, field=field)


def parse_instant(text: str, field: str) -> datetime:
    """An ISO 8601 date (its midnight) or date-time, in UTC; no offset means UTC."""
    try:
        value = datetime.fromisoformat(text.strip())
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (ValueError, OverflowError):
        raise _invalid(field, f"{field} must be an ISO 8601 date or date-time "
                              f"(2026-12-01 or 2026-12-01T08:00:00Z), got {text!r}") from None


def start_of_next_day(now: datetime) -> datetime:
    return datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)


def encode_cursor(grouping: Grouping, last_key: str) -> str:
    raw = json.dumps({"group_by": grouping.value, "after": last_key}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(page: str, grouping: Grouping) -> str:
    """The last bucket key of the page before, from a cursor of the same grouping."""
    invalid = _invalid("page", "page is not a next_page value of this group_by")
    if len(page) > MAX_CURSOR_LENGTH:
        raise invalid
    try:
        decoded = json.loads(base64.urlsafe_b64decode(page + "=" * (-len(page) % 4)))
    except (ValueError, binascii.Error):
        raise invalid from None
    if not (isinstance(decoded, dict) and decoded.get("group_by") == grouping.value
            and isinstance(decoded.get("after"), str)):
        raise invalid
    return str(decoded["after"])


def checked_window(query: UsageQuery, now: datetime) -> UsageWindow:
    """The query's window, or INVALID_REQUEST naming the field at fault."""
    end = parse_instant(query.end, "end") if query.end.strip() else start_of_next_day(now)
    try:
        start = parse_instant(query.start, "start") if query.start.strip() else end - DEFAULT_RANGE
    except OverflowError:
        raise _invalid("end", f"end must be after {datetime.min.date() + DEFAULT_RANGE}") from None
    if start >= end:
        raise _invalid("start", f"start ({start.isoformat()}) must be before end ({end.isoformat()})")
    if end - start > MAX_RANGE:
        raise _invalid("end", f"the range from start to end may be at most {MAX_RANGE.days} days")
    limit = DEFAULT_PAGE_SIZE if query.limit is None else query.limit
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise _invalid("limit", f"limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}")
    after = decode_cursor(query.page, query.grouping) if query.page else None
    return UsageWindow(start, end, query.grouping, limit, after)


def report(window: UsageWindow, page: UsagePage) -> UsageReport:
    last = page.buckets[-1].key if page.has_more else None
    return UsageReport(window, page, encode_cursor(window.grouping, last) if last is not None else "")
