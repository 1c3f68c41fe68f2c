"""Every row of the spec's error table, through HTTP and through gRPC, compared.

One parametrised table: each case sets up the peers, sends the same request both
ways, and checks the HTTP status, the OpenAI error body, the gRPC status code and
the ErrorInfo reason on the wire.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from quantized.images.v1 import images_pb2
from quantized_runtime.errors import Reason, ServiceError

from edge.errors import HTTP_ERROR_BY_REASON, HttpReason
from tests.edge.conftest import Stack
from tests.edge.fakes import POOR_KEY, VALID_KEY


@dataclass
class Case:
    name: str
    reason: Reason
    http_status: int
    grpc_code: grpc.StatusCode
    body: dict[str, Any] = field(default_factory=lambda: {"model": "dall-e-3", "prompt": "a hedgehog"})
    authorization: str | None = f"Bearer {VALID_KEY}"
    provider: str | None = None
    setup: Callable[[Stack], None] = lambda stack: None
    param: str | None = None
    provider_called: bool = False


def _provider_fails(error: ServiceError) -> Callable[[Stack], None]:
    def setup(stack: Stack) -> None:
        stack.peers.provider.behaviour["openai"] = error
    return setup


async def _crash(request: Any) -> Any:
    raise RuntimeError("secret-upstream-key leaked into a traceback")


def _provider_crashes(stack: Stack) -> None:
    stack.peers.provider.behaviour["openai"] = _crash


CASES = [
    Case("modality mismatch", Reason.MODALITY_MISMATCH, 400, grpc.StatusCode.FAILED_PRECONDITION,
         body={"model": "gpt-4o", "prompt": "x"}),
    Case("pinned provider without a row", Reason.PROVIDER_NOT_OFFERED, 400, grpc.StatusCode.FAILED_PRECONDITION,
         provider="bedrock"),
    Case("unknown provider slug", Reason.PROVIDER_NOT_OFFERED, 400, grpc.StatusCode.FAILED_PRECONDITION,
         provider="nosuchprovider"),
    Case("no active providers", Reason.NO_ACTIVE_PROVIDERS, 400, grpc.StatusCode.FAILED_PRECONDITION,
         body={"model": "dall-e-2", "prompt": "x"}),
    Case("missing key", Reason.UNAUTHENTICATED, 401, grpc.StatusCode.UNAUTHENTICATED, authorization=None),
    Case("not a bearer", Reason.UNAUTHENTICATED, 401, grpc.StatusCode.UNAUTHENTICATED,
         authorization=f"Basic {VALID_KEY}"),
    Case("bearer without token", Reason.UNAUTHENTICATED, 401, grpc.StatusCode.UNAUTHENTICATED,
         authorization="Bearer"),
    Case("invalid key", Reason.UNAUTHENTICATED, 401, grpc.StatusCode.UNAUTHENTICATED,
         authorization="Bearer sk-quantized-wrong"),
    Case("invalid jwt", Reason.UNAUTHENTICATED, 401, grpc.StatusCode.UNAUTHENTICATED,
         authorization="Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.bad"),
    Case("insufficient credits", Reason.INSUFFICIENT_CREDITS, 402, grpc.StatusCode.RESOURCE_EXHAUSTED,
         authorization=f"Bearer {POOR_KEY}"),
    Case("unknown model", Reason.MODEL_NOT_FOUND, 404, grpc.StatusCode.NOT_FOUND,
         body={"model": "no-such-model", "prompt": "x"}),
    Case("validation", Reason.INVALID_REQUEST, 422, grpc.StatusCode.INVALID_ARGUMENT,
         body={"model": "dall-e-3", "prompt": "x", "n": 11}, param="n"),
    Case("upstream timeout", Reason.UPSTREAM_UNAVAILABLE, 503, grpc.StatusCode.UNAVAILABLE,
         setup=_provider_fails(ServiceError(Reason.UPSTREAM_UNAVAILABLE, "upstream timed out")),
         provider_called=True),
    Case("upstream rate limit", Reason.UPSTREAM_UNAVAILABLE, 503, grpc.StatusCode.UNAVAILABLE,
         setup=_provider_fails(ServiceError(Reason.UPSTREAM_UNAVAILABLE, "upstream rate limited")),
         provider_called=True),
    Case("upstream refused our credentials", Reason.UPSTREAM_UNAVAILABLE, 503, grpc.StatusCode.UNAVAILABLE,
         setup=_provider_fails(ServiceError(Reason.UPSTREAM_UNAVAILABLE, "upstream authentication failed")),
         provider_called=True),
    Case("organization not verified", Reason.UPSTREAM_UNAVAILABLE, 503, grpc.StatusCode.UNAVAILABLE,
         setup=_provider_fails(ServiceError(Reason.UPSTREAM_UNAVAILABLE, "organization must be verified")),
         provider_called=True),
    Case("upstream rejected a parameter", Reason.UPSTREAM_REJECTED, 400, grpc.StatusCode.INVALID_ARGUMENT,
         setup=_provider_fails(ServiceError(Reason.UPSTREAM_REJECTED, "size not supported", field="size")),
         param="size", provider_called=True),
    Case("peer internal failure", Reason.INTERNAL, 500, grpc.StatusCode.INTERNAL,
         setup=_provider_crashes, provider_called=True),
    Case("peer answers with a reason callers must not see", Reason.INTERNAL, 500, grpc.StatusCode.INTERNAL,
         setup=_provider_fails(ServiceError(Reason.HOLD_CLOSED, "hold hold_1 already settled")),
         provider_called=True),
]


def _proto_request(body: dict[str, Any]) -> images_pb2.GenerateRequest:
    request = images_pb2.GenerateRequest(model=body["model"], prompt=body["prompt"])
    if "n" in body:
        request.n = body["n"]
    return request


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_error_row_is_identical_over_http_and_grpc(stack: Stack, case: Case) -> None:
    case.setup(stack)
    headers = {}
    metadata = []
    if case.authorization is not None:
        headers["Authorization"] = case.authorization
        metadata.append(("authorization", case.authorization))
    if case.provider is not None:
        headers["X-Quantized-Provider"] = case.provider
        metadata.append(("x-quantized-provider", case.provider))

    response = await stack.http.post("/v1/images/generations", headers=headers, json=case.body)
    assert response.status_code == case.http_status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == case.reason.value.lower()
    assert error["param"] == case.param
    assert error["type"] == HTTP_ERROR_BY_REASON[case.reason].type
    request_id = response.headers["x-request-id"]
    assert request_id
    assert len(stack.peers.provider.calls) == (1 if case.provider_called else 0)

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stack.images.Generate(_proto_request(case.body), metadata=metadata)
    assert raised.value.code() == case.grpc_code
    status = rpc_status.from_call(raised.value)
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.reason == case.reason.value
    assert len(stack.peers.provider.calls) == (2 if case.provider_called else 0)

    if case.reason is Reason.INTERNAL:
        # Generic, with the request id, and nothing from the peer's failure.
        assert error["message"] == f"internal error (request id {request_id})"
        assert "secret" not in raised.value.details() and "hold" not in raised.value.details()
        assert "request id req_" in raised.value.details()
    else:
        assert error["message"] == raised.value.details()


def test_every_reason_has_an_http_status() -> None:
    assert set(HTTP_ERROR_BY_REASON) == set(Reason) | set(HttpReason)


def test_the_status_table_matches_the_spec() -> None:
    expected = {
        Reason.INVALID_REQUEST: 422, Reason.MODEL_NOT_FOUND: 404, Reason.MODALITY_MISMATCH: 400,
        Reason.PROVIDER_NOT_OFFERED: 400, Reason.NO_ACTIVE_PROVIDERS: 400, Reason.UPSTREAM_REJECTED: 400,
        Reason.UNAUTHENTICATED: 401, Reason.INSUFFICIENT_CREDITS: 402, Reason.UPSTREAM_UNAVAILABLE: 503,
        Reason.INTERNAL: 500, Reason.ROUTE_NOT_FOUND: 404,
        HttpReason.INVALID_JSON: 400, HttpReason.NOT_AVAILABLE_IN_THIS_RELEASE: 404,
        HttpReason.METHOD_NOT_ALLOWED: 405, HttpReason.REQUEST_TOO_LARGE: 413,
        HttpReason.UNSUPPORTED_MEDIA_TYPE: 415,
    }
    assert {reason: HTTP_ERROR_BY_REASON[reason].status for reason in expected} == expected
