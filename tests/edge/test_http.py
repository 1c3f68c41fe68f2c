"""HTTP transport rules: media type, size limit, JSON parsing, routes, methods,
request ids, internal failures, and no 500 for any odd input."""

from __future__ import annotations

import json
import logging
import random
from typing import Any

import pytest

from quantized_runtime.request_context import current_request_id

from edge.openapi import openapi_document
from edge.validation import RequestValidator
from tests.edge.conftest import Stack
from tests.edge.fakes import VALID_KEY

AUTH = {"Authorization": f"Bearer {VALID_KEY}"}
GOOD = {"model": "dall-e-3", "prompt": "a hedgehog"}


def assert_openai_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["x-request-id"].startswith("req_")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    return error


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_a_non_json_content_type_is_415(stack: Stack, content_type: str | None) -> None:
    headers = dict(AUTH)
    if content_type:
        headers["Content-Type"] = content_type
    response = await stack.http.post("/v1/images/generations", headers=headers, content=json.dumps(GOOD))
    assert_openai_error(response, 415, "unsupported_media_type")


async def test_json_with_a_charset_is_accepted(stack: Stack) -> None:
    response = await stack.http.post("/v1/images/generations", content=json.dumps(GOOD),
                                     headers={**AUTH, "Content-Type": "application/json; charset=utf-8"})
    assert response.status_code == 200


async def test_a_body_over_the_limit_is_413(stack: Stack) -> None:
    body = {**GOOD, "prompt": "x" * (1024 * 1024)}
    response = await stack.http.post("/v1/images/generations", headers=AUTH, json=body)
    assert_openai_error(response, 413, "request_too_large")
    assert stack.peers.provider.calls == []


async def test_a_chunked_body_over_the_limit_is_413(stack: Stack) -> None:
    async def chunks() -> Any:
        yield b'{"model": "dall-e-3", "prompt": "'
        for _ in range(20):
            yield b"x" * 65536
        yield b'"}'

    response = await stack.http.post("/v1/images/generations", content=chunks(),
                                     headers={**AUTH, "Content-Type": "application/json"})
    assert_openai_error(response, 413, "request_too_large")


@pytest.mark.parametrize("body", [b"", b"{", b"not json", b'{"model": "dall-e-3",}', b"\xff\xfe{}",
                                  b"[" * 100_000, b'{"n": ' + b"9" * 5000 + b"}"],
                         ids=["empty", "truncated", "words", "trailing comma", "bad utf-8", "deep", "huge int"])
async def test_a_body_that_is_not_json_is_400(stack: Stack, body: bytes) -> None:
    response = await stack.http.post("/v1/images/generations", content=body,
                                     headers={**AUTH, "Content-Type": "application/json"})
    assert_openai_error(response, 400, "invalid_json")


async def test_authentication_comes_before_the_body(stack: Stack) -> None:
    response = await stack.http.post("/v1/images/generations", content=b"not json",
                                     headers={"Content-Type": "application/json"})
    assert_openai_error(response, 401, "unauthenticated")


@pytest.mark.parametrize("path", ["/v1/images/edits", "/v1/images/variations",
                                  "/v1/aws-bedrock/images/generations", "/v1/gemini/images/generations"])
@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_routes_not_in_this_release_are_404_saying_so(stack: Stack, path: str, method: str) -> None:
    response = await stack.http.request(method, path, headers=AUTH, json=GOOD)
    error = assert_openai_error(response, 404, "not_available_in_this_release")
    assert "not available in this release" in error["message"] or "in this release" in error["message"]
    assert path in error["message"]


@pytest.mark.parametrize("path", ["/", "/v1/images", "/v1/images/generations/", "/v1/chat/completions",
                                  "/v2/images/generations"])
async def test_unknown_paths_are_404(stack: Stack, path: str) -> None:
    response = await stack.http.post(path, headers=AUTH, json=GOOD)
    assert_openai_error(response, 404, "route_not_found")


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/images/generations"), ("PUT", "/v1/images/generations"),
                                              ("DELETE", "/v1/models"), ("POST", "/v1/models")])
async def test_a_wrong_method_is_405(stack: Stack, method: str, path: str) -> None:
    response = await stack.http.request(method, path, headers=AUTH)
    assert_openai_error(response, 405, "method_not_allowed")


async def test_every_response_has_a_distinct_request_id(stack: Stack) -> None:
    responses = [
        await stack.http.post("/v1/images/generations", headers=AUTH, json=GOOD),
        await stack.http.post("/v1/images/generations", json=GOOD),
        await stack.http.get("/v1/models", headers=AUTH),
        await stack.http.get("/nowhere"),
        await stack.http.get("/openapi.json"),
    ]
    ids = [response.headers["x-request-id"] for response in responses]
    assert all(request_id.startswith("req_") for request_id in ids)
    assert len(set(ids)) == len(ids)


class _RequestIdRecorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[logging.LogRecord, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record, current_request_id.get()))


async def test_an_internal_failure_is_generic_and_logged_with_the_request_id(stack: Stack) -> None:
    async def crash(request: Any) -> Any:
        raise RuntimeError("the upstream key is sk-live-secret")

    stack.peers.provider.behaviour["openai"] = crash
    recorder = _RequestIdRecorder()
    logger = logging.getLogger("quantized.edge")
    logger.addHandler(recorder)
    try:
        response = await stack.http.post("/v1/images/generations", headers=AUTH, json=GOOD)
    finally:
        logger.removeHandler(recorder)
    error = assert_openai_error(response, 500, "internal")
    request_id = response.headers["x-request-id"]
    assert error["message"] == f"internal error (request id {request_id})"
    assert "secret" not in response.text
    failures = [rid for record, rid in recorder.records if record.levelno >= logging.ERROR]
    assert failures and all(rid == request_id for rid in failures)


async def test_the_openapi_document_is_derived_from_the_validator(stack: Stack) -> None:
    response = await stack.http.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document == json.loads(json.dumps(openapi_document(RequestValidator())))
    schema = document["components"]["schemas"]["ImageGenerationRequest"]
    assert schema["additionalProperties"] is False and schema["required"] == ["model", "prompt"]
    assert schema["properties"]["quality"]["enum"][:-1] == ["standard", "hd", "low", "medium", "high", "auto"]


def _odd_values(rng: random.Random) -> Any:
    choices: list[Any] = [None, True, False, 0, -1, 2**63, -(2**70), 1.5, float("1e308"), "", " ", "auto",
                          "1024x1024", "hd", "\u0000", "\ud800", "🦔" * 50, [], {}, [1, "a"], {"a": {"b": []}},
                          "x" * 5000, 10, "10"]
    return rng.choice(choices)


def _odd_bodies() -> list[bytes]:
    rng = random.Random(20261125)
    names = ["model", "prompt", "n", "size", "quality", "style", "background", "output_format",
             "output_compression", "moderation", "seed", "negative_prompt", "user", "stream", "", "模型"]
    bodies = []
    for _ in range(60):
        body = {name: _odd_values(rng) for name in rng.sample(names, rng.randint(0, len(names)))}
        if rng.random() < 0.5:
            body.update(model="dall-e-3", prompt="a hedgehog")
        bodies.append(json.dumps(body).encode())
    bodies += [b'{"model": "dall-e-3", "prompt": "\\ud800"}', b'{"model": "dall-e-3", "prompt": NaN}',
               b'{"model": "dall-e-3", "prompt": "x", "n": Infinity}', b'{"model": "dall-e-3", "model": 5}',
               b'{"model": "dall-e-3", "prompt": "x", "seed": -0}', b'{"model": "\\u0000", "prompt": "x"}',
               b'{"model": "dall-e-3", "prompt": "x", "size": "99999x99999"}']
    return bodies


async def test_no_odd_json_body_causes_a_server_error(stack: Stack) -> None:
    for body in _odd_bodies():
        response = await stack.http.post("/v1/images/generations", content=body,
                                         headers={**AUTH, "Content-Type": "application/json"})
        assert response.status_code < 500, (body[:200], response.text)
        assert response.headers["x-request-id"]
        if response.status_code != 200:
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}
