"""The usage API (issue 19 item 2), every service real, billing on SQLite and on
PostgreSQL: after a mixed run (images generated, a flagged one, a failed one, by
two keys and a JWT) GET /v1/usage per day, model and key equals billing's own
records and ledger; pages cover every bucket once; another account's key sees
nothing of it; a bad query is a 400 naming its parameter; gRPC's GetUsage and
`quantized admin usage` (the real CLI against the running billing) give the same
numbers."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import httpx
import jwt
import pytest
from google.protobuf import json_format
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from billing_svc.storage.schema import ledger, usage_records
from quantized.billing.v1 import billing_pb2
from quantized.common.v1 import usage_pb2
from quantized.images.v1 import images_pb2, images_pb2_grpc
from tests.conftest import POSTGRES_ADMIN_DSN, _in_ci
from tests.e2e.stack import ADMIN_TOKEN, Account, Stack
from tests.fake_upstreams import FakeBedrock, FakeGoogle, FakeOpenAI, RecordedRequest, Reply

pytestmark = pytest.mark.slow

OPENING_CREDITS = 100_000_000
OTHER_CREDITS = 50_000_000
JWT_SECRET = "a-usage-test-hs256-secret-of-32-bytes!"
JWT_ISSUER, JWT_AUDIENCE = "https://issuer.test", "quantized-usage-test"
FAIL, FLAG = "[fail]", "[flag]"
TOTALS = ("requests", "images", "input_tokens", "output_tokens", "total_tokens", "megapixels", "credits_used")


def _steer(upstream: FakeOpenAI) -> None:
    def behave(request: RecordedRequest) -> Reply:
        prompt = request.json()["prompt"]
        if FAIL in prompt:
            return upstream.error("server_error")
        if FLAG in prompt:
            return upstream.error("content_policy_violation")
        return upstream.success(request)
    upstream.always(behave)


def _postgres_database() -> tuple[str, str]:
    """A fresh PostgreSQL database for the module's billing: (its name, its URL)."""
    async def create(name: str) -> None:
        admin = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=3)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
    name = f"quantized_usage_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(create(name))
    except (OSError, asyncpg.PostgresError, TimeoutError) as problem:
        message = f"PostgreSQL not reachable at {POSTGRES_ADMIN_DSN} ({problem})"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    base = POSTGRES_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return name, f"{base}/{name}"


def _drop_postgres_database(name: str) -> None:
    async def drop() -> None:
        admin = await asyncpg.connect(POSTGRES_ADMIN_DSN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
    asyncio.run(drop())


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def usage_stack(request, tmp_path_factory) -> Iterator[Stack]:
    overrides: dict[str, Any] = {"jwt_secret": JWT_SECRET, "jwt_issuer": JWT_ISSUER, "jwt_audience": JWT_AUDIENCE}
    database = None
    if request.param == "postgres":
        database, overrides["database_url"] = _postgres_database()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKEFAKEFAKEFAKE")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret-access-key")
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        with FakeOpenAI() as fake_openai, FakeBedrock() as fake_bedrock, FakeGoogle() as fake_google:
            _steer(fake_openai)
            running = Stack(tmp_path_factory.mktemp("usage"), fake_openai, fake_bedrock, fake_google,
                            billing_overrides=overrides).start()
            try:
                yield running
            finally:
                running.stop()
                if database is not None:
                    _drop_postgres_database(database)


@dataclass
class MixedRun:
    account: Account
    second_key_id: str
    second_key: str
    token: str
    other: Account
    credits_reported: int


def _jwt(account_id: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": account_id, "iss": JWT_ISSUER, "aud": JWT_AUDIENCE, "iat": now, "exp": now + 600},
                      JWT_SECRET, algorithm="HS256")


def _generate(stack: Stack, token: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{stack.base_url}/images/generations", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {token}"})


@pytest.fixture(scope="module")
def run(usage_stack: Stack) -> MixedRun:
    """Account A: two images, a token-priced image, a flagged one and a failed one
    with its first key, an image with its second key, one with a JWT. Account B: one image."""
    stack = usage_stack
    account = stack.create_account(OPENING_CREDITS, name="usage-a")
    created = stack._admin(stack.billing_admin.CreateApiKey,
                           billing_pb2.CreateApiKeyRequest(account_id=account.account_id))
    second = (created.key.key_id, created.api_key)
    token = _jwt(account.account_id)
    other = stack.create_account(OTHER_CREDITS, name="usage-b")
    calls = [
        (account.api_key, {"model": "sandbox-image-1", "prompt": "two hedgehogs", "n": 2, "size": "64x64"}, 200),
        (account.api_key, {"model": "gpt-image-1", "prompt": "a logo"}, 200),
        (account.api_key, {"model": "gpt-image-1", "prompt": f"{FLAG} blocked"}, 200),
        (account.api_key, {"model": "gpt-image-1", "prompt": f"{FAIL} broken"}, 503),
        (second[1], {"model": "sandbox-image-1", "prompt": "second key", "size": "32x32"}, 200),
        (token, {"model": "sandbox-image-1", "prompt": "a jwt caller", "size": "16x16"}, 200),
        (other.api_key, {"model": "sandbox-image-1", "prompt": "another account", "size": "64x64"}, 200),
    ]
    reported = 0
    for key, body, status in calls:
        reply = _generate(stack, key, body)
        assert reply.status_code == status, reply.text
        if status == 200 and key != other.api_key:
            reported += reply.json()["usage"]["credits_used"]
    flagged = _generate(stack, account.api_key, {"model": "gpt-image-1", "prompt": f"{FLAG} again"}).json()
    assert flagged["data"][0]["flagged"] is True and flagged["usage"]["credits_used"] == 0
    return MixedRun(account, second[0], second[1], token, other, reported)


def _usage(stack: Stack, token: str, **params: Any) -> httpx.Response:
    return httpx.get(f"{stack.base_url}/usage", params=params, timeout=30,
                     headers={"Authorization": f"Bearer {token}"})


def _all_buckets(stack: Stack, token: str, **params: Any) -> list[dict[str, Any]]:
    buckets: list[dict[str, Any]] = []
    page: dict[str, Any] = {}
    while True:
        reply = _usage(stack, token, **params, **page)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        buckets.extend(body["data"])
        if not body["has_more"]:
            assert body["next_page"] is None
            return buckets
        page = {"page": body["next_page"]}


async def _records(database_url: str, account_id: str) -> tuple[list[Any], int]:
    """Billing's usage records of the account, and the sum of its ledger."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(usage_records).where(usage_records.c.account_id == account_id))).all()
            ledger_sum = (await conn.execute(select(func.coalesce(func.sum(ledger.c.amount), 0))
                                             .where(ledger.c.account_id == account_id))).scalar_one()
            return rows, int(ledger_sum)
    finally:
        await engine.dispose()


def _expected(rows: list[Any], group: Any) -> dict[Any, dict[str, Any]]:
    totals: dict[Any, dict[str, Any]] = {}
    for row in rows:
        bucket = totals.setdefault(group(row), dict.fromkeys(TOTALS, 0))
        bucket["requests"] += 1
        bucket["images"] += row.images
        for name in ("input_tokens", "output_tokens", "total_tokens", "megapixels"):
            bucket[name] += getattr(row, name) or 0
        bucket["credits_used"] += row.credits
    for bucket in totals.values():
        bucket["megapixels"] = round(bucket["megapixels"], 6)
    return totals


def _totals(bucket: dict[str, Any]) -> dict[str, Any]:
    return {name: bucket[name] for name in TOTALS}


def test_usage_per_day_model_and_key_equals_billings_records_and_ledger(usage_stack, run):
    stack = usage_stack
    rows, ledger_sum = stack.run(_records(stack.billing_settings.resolved_database_url(), run.account.account_id))
    # Two images, a token-priced one, two flagged, one by the second key, one by JWT; the failure wrote nothing.
    assert len(rows) == 6
    view = stack.account(run.account.account_id).account
    spendable = view.balance_micro_credits + view.held_micro_credits
    assert ledger_sum == view.balance_micro_credits

    by_day = _usage(stack, run.account.api_key, group_by="day").json()
    assert by_day["credits_remaining"] == spendable and by_day["unlimited"] is False
    assert by_day["group_by"] == "day" and by_day["object"] == "list"
    assert {b["day"]: _totals(b) for b in by_day["data"]} == _expected(
        rows, lambda row: row.created_at.date().isoformat())
    assert sum(b["credits_used"] for b in by_day["data"]) == run.credits_reported == OPENING_CREDITS - spendable

    by_model = _all_buckets(stack, run.account.api_key, group_by="model")
    assert {b["model"]: _totals(b) for b in by_model} == _expected(rows, lambda row: row.model_id)
    assert {b["model"]: b["requests"] for b in by_model} == {"gpt-image-1": 3, "sandbox-image-1": 3}
    assert next(b for b in by_model if b["model"] == "gpt-image-1")["total_tokens"] > 0

    by_key = _all_buckets(stack, run.account.api_key, group_by="key")
    assert {b["key_id"]: _totals(b) for b in by_key} == _expected(rows, lambda row: row.api_key_id)
    assert {b["key_id"]: b["requests"] for b in by_key} == {
        run.account.key_id: 4, run.second_key_id: 1, None: 1}
    jwt_bucket = next(b for b in by_key if b["key_id"] is None)
    assert jwt_bucket["key_prefix"] is None
    for bucket in by_key:
        if bucket["key_id"] is not None:
            assert run.account.api_key.startswith(bucket["key_prefix"]) or run.second_key.startswith(
                bucket["key_prefix"])
            assert run.account.api_key not in json.dumps(bucket) and run.second_key not in json.dumps(bucket)


def test_pages_cover_every_bucket_exactly_once(usage_stack, run):
    for group_by, name in (("model", "model"), ("key", "key_id")):
        whole = _usage(usage_stack, run.account.api_key, group_by=group_by).json()["data"]
        paged = _all_buckets(usage_stack, run.account.api_key, group_by=group_by, limit=1)
        assert [b[name] for b in paged] == [b[name] for b in whole] and len(paged) == len(whole) >= 2
        assert paged == whole


def test_a_jwt_caller_and_every_key_of_the_account_see_the_same_report(usage_stack, run):
    reports = [_usage(usage_stack, token, group_by="key").json()
               for token in (run.account.api_key, run.second_key, run.token)]
    assert reports[0] == reports[1] == reports[2]


def test_another_accounts_key_sees_nothing_of_it(usage_stack, run):
    for group_by in ("day", "model", "key"):
        body = _usage(usage_stack, run.other.api_key, group_by=group_by).json()
        assert sum(b["requests"] for b in body["data"]) == 1
        assert body["credits_remaining"] == OTHER_CREDITS - sum(b["credits_used"] for b in body["data"])
        text = json.dumps(body)
        assert run.account.key_id not in text and run.second_key_id not in text and "gpt-image-1" not in text


@pytest.mark.parametrize(("params", "param"), [
    ({"start": "last tuesday"}, "start"),
    ({"start": "2026-12-02", "end": "2026-12-01"}, "start"),
    ({"start": "2024-01-01", "end": "2026-01-01"}, "end"),
    ({"group_by": "week"}, "group_by"),
    ({"limit": "ten"}, "limit"),
    ({"limit": "0"}, "limit"),
    ({"page": "bogus"}, "page"),
    ({"since": "2026-12-01"}, "since"),
])
def test_a_bad_query_is_400_naming_the_parameter_and_writes_nothing(usage_stack, run, params, param):
    before = usage_stack.account(run.account.account_id)
    reply = _usage(usage_stack, run.account.api_key, **params)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert error["code"] == "invalid_query_parameter" and reply.headers["x-request-id"].startswith("req_")
    assert usage_stack.account(run.account.account_id) == before


def test_without_a_valid_token_it_is_401(usage_stack, run):
    assert _usage(usage_stack, "sk-quantized-not-a-key").status_code == 401
    assert httpx.get(f"{usage_stack.base_url}/usage", timeout=30).status_code == 401


def test_grpc_get_usage_gives_the_same_report(usage_stack, run):
    http = _usage(usage_stack, run.account.api_key, group_by="model", limit="1").json()
    with grpc.insecure_channel(usage_stack.edge_grpc_addr) as channel:
        stub = images_pb2_grpc.ImagesServiceStub(channel)
        metadata = [("authorization", f"Bearer {run.account.api_key}")]
        reply = stub.GetUsage(images_pb2.GetUsageRequest(query=usage_pb2.UsageQuery(
            group_by=usage_pb2.USAGE_GROUPING_MODEL, limit=1)), metadata=metadata, timeout=30)
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetUsage(images_pb2.GetUsageRequest(query=usage_pb2.UsageQuery(start="soon")),
                          metadata=metadata, timeout=30)
    report = reply.report
    assert reply.request_id.startswith("req_")
    assert (report.start, report.end, report.has_more, report.next_page) == (
        http["start"], http["end"], http["has_more"], http["next_page"])
    assert report.credits_remaining == http["credits_remaining"]
    assert [(b.model, *(getattr(b, name) for name in TOTALS)) for b in report.buckets] == [
        (b["model"], *(b[name] for name in TOTALS)) for b in http["data"]]
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _cli(stack: Stack, *args: str) -> subprocess.CompletedProcess:
    operator = stack.pki.operator
    environment = {**os.environ, "QUANTIZED_ADMIN_TOKEN": ADMIN_TOKEN,
                   "QUANTIZED_TLS_CERT_FILE": str(operator.cert_file),
                   "QUANTIZED_TLS_KEY_FILE": str(operator.key_file),
                   "QUANTIZED_TLS_CA_FILE": str(operator.ca_file),
                   "XDG_STATE_HOME": str(stack.data_dir / "no-dev-stack")}
    return subprocess.run([sys.executable, "-m", "quantized_cli", "admin",
                           "--billing-addr", f"127.0.0.1:{stack.billing.port}", "usage", *args],
                          capture_output=True, text=True, timeout=60, env=environment)


def test_admin_cli_usage_prints_the_same_numbers_as_json_csv_and_a_table(usage_stack, run):
    http = _all_buckets(usage_stack, run.account.api_key, group_by="key")
    expected = {b["key_id"] or "": _totals(b) for b in http}

    as_json = _cli(usage_stack, "--account", run.account.account_id, "--group-by", "key", "--json")
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    assert {b["key_id"]: _totals(b) for b in report["buckets"]} == expected
    assert report["credits_remaining"] == _usage(usage_stack, run.account.api_key).json()["credits_remaining"]

    as_csv = _cli(usage_stack, "--account", run.account.account_id, "--group-by", "key", "--csv")
    assert as_csv.returncode == 0, as_csv.stderr
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert {row["key_id"]: {name: float(row[name]) if name == "megapixels" else int(row[name]) for name in TOTALS}
            for row in rows} == expected

    table = _cli(usage_stack, "--account", run.account.account_id, "--group-by", "model")
    assert table.returncode == 0, table.stderr
    assert "gpt-image-1" in table.stdout and "credits_used" in table.stdout

    bad = _cli(usage_stack, "--account", run.account.account_id, "--start", "whenever")
    assert bad.returncode == 1 and "INVALID_REQUEST" in bad.stderr and "start" in bad.stderr


def test_the_report_json_matches_the_proto_field_for_field(usage_stack, run):
    """Every total the proto's bucket carries is in the JSON bucket, and no more
    (what names a day or a key, and a key's caps and spend, are not totals)."""
    body = _usage(usage_stack, run.account.api_key, group_by="model").json()
    fields = set(json_format.MessageToDict(usage_pb2.UsageBucket(), preserving_proto_field_name=True,
                                           always_print_fields_with_no_presence=True))
    key_fields = {"key_id", "key_prefix", "spent_today_micro_credits", "spent_total_micro_credits"}
    assert set(body["data"][0]) - {"object"} == fields - {"day"} - key_fields
