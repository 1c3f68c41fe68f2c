"""GET /v1/usage's query string into billing's UsageQuery, and the report as JSON
(edge/usage.py); the meaning of the query is billing's (tests/billing/test_usage_report.py)."""

from __future__ import annotations

import json

import pytest

from edge.errors import HttpReason, HttpRejection
from edge.openapi import openapi_document
from edge.usage import QUERY_PARAMETERS, USAGE_PATH, usage_json, usage_query, usage_query_rejection
from edge.validation import RequestValidator
from quantized.common.v1 import usage_pb2
from quantized_runtime.errors import Reason, ServiceError


def test_the_parameters_become_the_query_message():
    query = usage_query([("start", "2026-12-01"), ("end", "2026-12-02T00:00:00Z"), ("group_by", "key"),
                         ("limit", "25"), ("page", "abc")])
    assert query == usage_pb2.UsageQuery(start="2026-12-01", end="2026-12-02T00:00:00Z",
                                         group_by=usage_pb2.USAGE_GROUPING_KEY, limit=25, page="abc")
    assert not usage_query([]).HasField("limit") and usage_query([]).group_by == usage_pb2.USAGE_GROUPING_UNSPECIFIED


@pytest.mark.parametrize(("parameters", "field"), [
    ([("group_by", "week")], "group_by"),
    ([("group_by", "DAY")], "group_by"),
    ([("group_by", "unspecified")], "group_by"),
    ([("limit", "-1")], "limit"),
    ([("limit", "2.5")], "limit"),
    ([("limit", "")], "limit"),
    ([("limit", "٣")], "limit"),
    ([("start", "2026-12-01"), ("start", "2026-12-02")], "start"),
    ([("since", "2026-12-01")], "since"),
    ([("page", "x" * 1025)], "page"),
])
def test_a_parameter_the_route_cannot_read_is_refused_by_name(parameters, field):
    with pytest.raises(ServiceError) as refused:
        usage_query(parameters)
    assert refused.value.reason is Reason.INVALID_REQUEST and refused.value.field == field
    rejection = usage_query_rejection(refused.value)
    assert isinstance(rejection, HttpRejection)
    assert rejection.reason is HttpReason.INVALID_QUERY_PARAMETER and rejection.param == field


def test_other_errors_pass_unchanged():
    unavailable = ServiceError(Reason.SERVICE_UNAVAILABLE, "billing is away")
    assert usage_query_rejection(unavailable) is unavailable


def test_a_key_bucket_shows_null_for_the_jwt_bucket_and_never_more_than_the_prefix():
    report = usage_pb2.UsageReport(
        start="2026-12-01T00:00:00Z", end="2026-12-02T00:00:00Z", group_by=usage_pb2.USAGE_GROUPING_KEY,
        buckets=[usage_pb2.UsageBucket(requests=1, credits_used=5),
                 usage_pb2.UsageBucket(key_id="key_1", key_prefix="sk-quantized-AbCd", requests=2, images=2)],
        unlimited=True)
    body = json.loads(usage_json(report))
    assert body["group_by"] == "key" and body["credits_remaining"] is None and body["next_page"] is None
    assert [(b["key_id"], b["key_prefix"]) for b in body["data"]] == [(None, None), ("key_1", "sk-quantized-AbCd")]
    assert "day" not in body["data"][0] and "model" not in body["data"][0]


def test_the_openapi_document_lists_every_query_parameter():
    operation = openapi_document(RequestValidator())["paths"][USAGE_PATH]["get"]
    assert [parameter["name"] for parameter in operation["parameters"]] == list(QUERY_PARAMETERS)
    assert set(operation["responses"]) == {"200", "400", "401", "429", "500"}
