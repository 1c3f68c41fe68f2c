"""Strict `Authorization` parsing (RFC 9110 credentials, RFC 6750 bearer token).

Header bytes go through a raw socket to the real HTTP server, so nothing on the
client side normalises them; gRPC metadata goes through a real channel. The
authentication cache is off, so any token the edge accepted would reach billing.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from quantized.images.v1 import images_pb2
from quantized_runtime.errors import Reason, ServiceError

from edge.flow import bearer_token
from tests.edge.conftest import Stack
from tests.edge.fakes import VALID_KEY

KEY = VALID_KEY.encode()
BODY = b'{"model":"dall-e-3","prompt":"a hedgehog"}'

MALFORMED_HEADERS = {
    "no-break space after the token": b"Bearer " + KEY + b"\xa0",
    "no-break space before the token": b"Bearer \xa0" + KEY,
    "zero-width space after the token": b"Bearer " + KEY + b"\xe2\x80\x8b",
    "next line after the token": b"Bearer " + KEY + b"\x85",
    "non-ASCII letter in the token (UTF-8)": b"Bearer " + KEY + b"\xc3\xa9",
    "non-ASCII letter in the token (latin-1)": b"Bearer " + KEY + b"\xe9",
    "a second token": b"Bearer " + KEY + b" other",
    "leading garbage": b"xBearer " + KEY,
    "a tab between scheme and token": b"Bearer\t" + KEY,
    "a comma after the token": b"Bearer " + KEY + b",",
    "padding inside the token": b"Bearer " + KEY + b"=x",
    "another scheme": b"Basic " + KEY,
}

VALID_HEADERS = {
    "trailing spaces and tabs": b"Bearer " + KEY + b"  \t \t",
    "lower-case scheme": b"bearer " + KEY,
    "upper-case scheme, several spaces": b"BEARER   " + KEY,
}


@dataclass
class RawResponse:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def post_raw(stack: Stack, authorization: bytes) -> RawResponse:
    """POST a generation with the Authorization header's bytes exactly as given."""
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.edge.http_port)
    try:
        writer.write(b"POST /v1/images/generations HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n"
                     b"Content-Type: application/json\r\nAuthorization: " + authorization + b"\r\n"
                     b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)
        answer = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    return RawResponse(int(head.split(b" ", 2)[1]), body)


def authenticated_tokens(stack: Stack) -> list[str]:
    return [request.token for request in stack.peers.billing.requests("Authenticate")]


@pytest.fixture
def edge_overrides() -> dict[str, object]:
    return {"auth_cache_ttl_seconds": 0}


@pytest.mark.parametrize("authorization", MALFORMED_HEADERS.values(), ids=MALFORMED_HEADERS.keys())
async def test_a_malformed_header_is_401_without_a_billing_call(stack: Stack, authorization: bytes) -> None:
    response = await post_raw(stack, authorization)
    assert response.status == 401, response.body
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"]) == ("authentication_error", "unauthenticated")
    assert authenticated_tokens(stack) == []
    assert stack.peers.provider.calls == []


async def test_a_nul_byte_is_refused_by_the_http_server_before_the_edge(stack: Stack) -> None:
    # RFC 9110 section 5.5: a field value with NUL is invalid; the HTTP parser rejects
    # the whole message (400, its own plain-text body), so no token is read at all.
    response = await post_raw(stack, b"Bearer " + KEY + b"\x00")
    assert response.status == 400
    assert authenticated_tokens(stack) == []


@pytest.mark.parametrize("authorization", VALID_HEADERS.values(), ids=VALID_HEADERS.keys())
async def test_a_valid_header_reaches_billing_with_the_token_as_sent(stack: Stack, authorization: bytes) -> None:
    response = await post_raw(stack, authorization)
    assert response.status == 200, response.body
    assert authenticated_tokens(stack) == [VALID_KEY]


GRPC_MALFORMED = ["Bearer " + VALID_KEY + " other", "xBearer " + VALID_KEY, "Bearer " + VALID_KEY + ",",
                  "Basic " + VALID_KEY, "Bearer"]


@pytest.mark.parametrize("authorization", GRPC_MALFORMED)
async def test_malformed_grpc_metadata_is_unauthenticated_without_a_billing_call(
        stack: Stack, authorization: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stack.images.Generate(images_pb2.GenerateRequest(model="dall-e-3", prompt="x"),
                                    metadata=(("authorization", authorization),))
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert authenticated_tokens(stack) == []


@pytest.mark.parametrize("authorization", ["bearer " + VALID_KEY, "Bearer  " + VALID_KEY + "   "])
async def test_valid_grpc_metadata_reaches_billing_with_the_token_as_sent(stack: Stack, authorization: str) -> None:
    answer = await stack.images.Generate(images_pb2.GenerateRequest(model="dall-e-3", prompt="x"),
                                         metadata=(("authorization", authorization),))
    assert answer.usage.images == 1
    assert authenticated_tokens(stack) == [VALID_KEY]


# What a transport hands the parser, including characters gRPC clients refuse to send.
@pytest.mark.parametrize("authorization", [
    *(value.decode("latin-1") for value in MALFORMED_HEADERS.values()),
    "Bearer " + VALID_KEY + "\x00", "Bearer " + VALID_KEY + "\u200b", "Bearer " + VALID_KEY + "\n",
    "Bearer " + VALID_KEY + "\u3000", "Bearer sk-\u212aey", "\u212aBearer " + VALID_KEY, " Bearer " + VALID_KEY,
    "Bearer ", "Bearer =",
])
def test_the_parser_refuses_anything_but_the_rule(authorization: str) -> None:
    with pytest.raises(ServiceError) as raised:
        bearer_token(authorization)
    assert raised.value.reason is Reason.UNAUTHENTICATED


@pytest.mark.parametrize(("authorization", "token"), [
    ("Bearer abc", "abc"), ("bEaReR abc \t", "abc"), ("Bearer a-b.c_d~e+f/g==", "a-b.c_d~e+f/g=="),
    ("Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.sig", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.sig"),
])
def test_the_parser_returns_the_token_as_sent(authorization: str, token: str) -> None:
    assert bearer_token(authorization) == token
