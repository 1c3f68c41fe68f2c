"""GET /v1/usage: the query string as billing's `UsageQuery`, and the report as JSON.

Billing checks what the query means (dates, range, page size, cursor;
billing_svc/usage.py) for the HTTP route, the gRPC ImagesService.GetUsage and the
admin CLI alike; this module only reads the query string into the message: each
parameter at most once, no unknown parameter, `group_by` a word of the proto
enum, `limit` a whole number. On HTTP a refused query is a 400 naming the
parameter (`usage_query_rejection`), as OpenAI answers a bad query parameter;
the 422 of the spec is for the generation body's fields.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from quantized.common.v1 import usage_pb2
from quantized_runtime.enum_names import enum_word, enum_words
from quantized_runtime.errors import Reason, ServiceError

from edge.errors import HttpReason, HttpRejection

USAGE_PATH = "/v1/usage"
QUERY_PARAMETERS = ("start", "end", "group_by", "limit", "page")
GROUPINGS = enum_words(usage_pb2.UsageGrouping.DESCRIPTOR)
# Longer than any ISO 8601 text or cursor billing accepts; caps what a message echoes.
MAX_PARAMETER_LENGTH = 1024

_dumps = json.JSONEncoder(separators=(",", ":")).encode


def _invalid(parameter: str, message: str) -> ServiceError:
    return ServiceError(Reason.INVALID_REQUEST, message, field=parameter)


def usage_query(parameters: Sequence[tuple[str, str]]) -> usage_pb2.UsageQuery:
    """The query string's (name, value) pairs, in order, as a UsageQuery."""
    values: dict[str, str] = {}
    for name, value in parameters:
        if name not in QUERY_PARAMETERS:
            raise _invalid(name, f"unknown query parameter {name[:64]!r}; accepted: {', '.join(QUERY_PARAMETERS)}")
        if name in values:
            raise _invalid(name, f"query parameter {name!r} is given more than once")
        if len(value) > MAX_PARAMETER_LENGTH:
            raise _invalid(name, f"query parameter {name!r} is longer than {MAX_PARAMETER_LENGTH} characters")
        values[name] = value
    query = usage_pb2.UsageQuery(start=values.get("start", ""), end=values.get("end", ""),
                                 page=values.get("page", ""))
    if "group_by" in values:
        grouping = GROUPINGS.get(values["group_by"])
        if grouping is None:
            raise _invalid("group_by", f"group_by must be one of {', '.join(GROUPINGS)}, "
                                       f"got {values['group_by'][:64]!r}")
        query.group_by = grouping  # type: ignore[assignment]
    if "limit" in values:
        text = values["limit"]
        if not (text.isascii() and text.isdigit()):
            raise _invalid("limit", f"limit must be a whole number, got {text[:64]!r}")
        # Billing bounds it; anything past int32 is out of its range anyway.
        query.limit = min(int(text), 2**31 - 1)
    return query


def usage_query_rejection(error: ServiceError) -> HttpRejection | ServiceError:
    """A query billing or this module refused, as the HTTP route answers it."""
    if error.reason is not Reason.INVALID_REQUEST:
        return error
    return HttpRejection(HttpReason.INVALID_QUERY_PARAMETER, error.message, param=error.field)


def _group(grouping: int, bucket: usage_pb2.UsageBucket) -> dict[str, Any]:
    """What names a bucket's group; a key bucket shows the key's id and prefix
    (null for the requests made with a JWT), never its secret, and its spend
    against its spending caps (null: no cap)."""
    if grouping == usage_pb2.USAGE_GROUPING_MODEL:
        return {"model": bucket.model}
    if grouping == usage_pb2.USAGE_GROUPING_KEY:
        keyed = bool(bucket.key_id)
        return {"key_id": bucket.key_id or None, "key_prefix": bucket.key_prefix or None,
                "daily_cap_credits": _optional(bucket, "daily_cap_micro_credits"),
                "total_cap_credits": _optional(bucket, "total_cap_micro_credits"),
                "credits_spent_today": bucket.spent_today_micro_credits if keyed else None,
                "credits_spent_total": bucket.spent_total_micro_credits if keyed else None}
    return {"day": bucket.day}


def _optional(bucket: usage_pb2.UsageBucket, field: str) -> int | None:
    return getattr(bucket, field) if bucket.HasField(field) else None


def _bucket(grouping: int, bucket: usage_pb2.UsageBucket) -> dict[str, Any]:
    return {"object": "usage.bucket", **_group(grouping, bucket),
            "requests": bucket.requests, "images": bucket.images,
            "input_tokens": bucket.input_tokens, "output_tokens": bucket.output_tokens,
            "total_tokens": bucket.total_tokens, "megapixels": bucket.megapixels,
            "credits_used": bucket.credits_used}


def usage_json(report: usage_pb2.UsageReport) -> bytes:
    return _dumps({
        "object": "list",
        "start": report.start,
        "end": report.end,
        "group_by": enum_word(usage_pb2.UsageGrouping.DESCRIPTOR, report.group_by),
        "data": [_bucket(report.group_by, bucket) for bucket in report.buckets],
        "has_more": report.has_more,
        "next_page": report.next_page or None,
        "credits_remaining": report.credits_remaining if report.HasField("credits_remaining") else None,
        "unlimited": report.unlimited,
    }).encode()
