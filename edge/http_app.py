"""The OpenAI-compatible HTTP API (Starlette).

Every response carries `x-request-id`; every error uses the OpenAI error shape.
The generation route hands the flow a loader that reads, parses and validates the
body, so HTTP and gRPC share one flow.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from quantized_runtime.errors import ServiceError
from quantized_runtime.request_context import current_request_id, new_request_id

from edge.errors import error_body, internal_error, service_error_response
from edge.flow import ImagesFlow
from edge.openapi import openapi_document
from edge.render import generation_json, models_json
from edge.validation import RequestValidator

log = logging.getLogger("quantized.edge.http")

REQUEST_ID_HEADER = "x-request-id"
PROVIDER_HEADER = "x-quantized-provider"
JSON_MEDIA_TYPE = "application/json"

# Routes the spec names as not shipped in this release.
NOT_IN_RELEASE = {
    "/v1/images/edits": "Image edits (/v1/images/edits) are not available in this release",
    "/v1/images/variations": "Image variations (/v1/images/variations) are not available in this release",
    "/v1/aws-bedrock/images/generations": (
        "There is no Bedrock passthrough for images (/v1/aws-bedrock/images/generations) in this release: "
        "use /v1/images/generations"),
    "/v1/gemini/images/generations": (
        "There is no Gemini passthrough for images (/v1/gemini/images/generations) in this release: "
        "use /v1/images/generations"),
}


ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class HttpProblem(Exception):
    """A transport-level rejection that has no ServiceError reason (400, 405, 413, 415)."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


class JsonPartsResponse(Response):
    """A JSON body sent as several parts with one Content-Length, so a multi-megabyte
    base64 image is written out without first being joined into one more copy."""

    def __init__(self, parts: list[bytes], status_code: int, request_id: str) -> None:
        super().__init__(b"", status_code=status_code, media_type=JSON_MEDIA_TYPE,
                         headers={REQUEST_ID_HEADER: request_id})
        self.parts = parts or [b""]
        self.headers["content-length"] = str(sum(len(part) for part in parts))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        last = len(self.parts) - 1
        for index, part in enumerate(self.parts):
            await send({"type": "http.response.body", "body": part, "more_body": index < last})


def _json_response(status: int, body: bytes | list[bytes], request_id: str) -> Response:
    if isinstance(body, list):
        return JsonPartsResponse(body, status, request_id)
    return Response(body, status_code=status, media_type=JSON_MEDIA_TYPE,
                    headers={REQUEST_ID_HEADER: request_id})


def _problem_response(problem: HttpProblem, request_id: str) -> Response:
    return _json_response(problem.status, error_body("invalid_request_error", problem.message, None, problem.code),
                          request_id)


Handler = Callable[[Request], Awaitable[bytes | list[bytes]]]


def _endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Request id, one log line, and every failure turned into an OpenAI error body."""

    async def endpoint(request: Request) -> Response:
        request_id = new_request_id()
        token = current_request_id.set(request_id)
        started = time.perf_counter()
        try:
            try:
                response = _json_response(200, await handler(request), request_id)
            except ServiceError as error:
                response = _json_response(*service_error_response(error), request_id)
            except HttpProblem as problem:
                response = _problem_response(problem, request_id)
            except Exception:
                log.exception("unhandled error", extra={"fields": {"path": request.url.path}})
                response = _json_response(*service_error_response(internal_error(request_id)), request_id)
            log.info("request", extra={"fields": {
                "method": request.method, "path": request.url.path, "status": response.status_code,
                "duration_ms": round((time.perf_counter() - started) * 1000, 3)}})
            return response
        finally:
            current_request_id.reset(token)

    return endpoint


async def _read_json(request: Request, max_body_bytes: int) -> Any:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != JSON_MEDIA_TYPE:
        raise HttpProblem(415, "Content-Type must be application/json", "unsupported_media_type")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
        raise _too_large(max_body_bytes)
    chunks = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                raise _too_large(max_body_bytes)
            chunks.append(chunk)
    except ClientDisconnect:
        # Nobody is left to answer; not a server failure either.
        raise HttpProblem(400, "the client disconnected while sending the body", "client_disconnected") from None
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, RecursionError):
        raise HttpProblem(400, "the request body is not valid JSON", "invalid_json") from None


def _too_large(limit: int) -> HttpProblem:
    return HttpProblem(413, f"the request body is larger than {limit} bytes", "request_too_large")


def create_app(flow: ImagesFlow, validator: RequestValidator, max_body_bytes: int) -> Starlette:
    openapi_body = json.dumps(openapi_document(validator)).encode()

    async def generate_images(request: Request) -> list[bytes]:
        async def load_request() -> Any:
            return validator.from_json(await _read_json(request, max_body_bytes))

        outcome = await flow.generate(request.headers.get("authorization"),
                                      request.headers.get(PROVIDER_HEADER, ""), load_request, flow.deadline())
        return generation_json(outcome)

    async def list_models(request: Request) -> bytes:
        return await flow.list_models(request.headers.get("authorization"), flow.deadline(), models_json)

    async def openapi(request: Request) -> bytes:
        return openapi_body

    async def not_in_release(request: Request) -> bytes:
        raise HttpProblem(404, NOT_IN_RELEASE[request.url.path], "not_available_in_this_release")

    async def http_exception(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        request_id = new_request_id()
        if exc.status_code == 405:
            problem = HttpProblem(405, f"method {request.method} is not allowed on {request.url.path}",
                                  "method_not_allowed")
        elif exc.status_code == 404:
            problem = HttpProblem(404, f"no such route: {request.url.path}", "route_not_found")
        else:
            problem = HttpProblem(exc.status_code, str(exc.detail), "http_error")
        response = _problem_response(problem, request_id)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    routes = [
        Route("/v1/images/generations", _endpoint(generate_images), methods=["POST"]),
        Route("/v1/models", _endpoint(list_models), methods=["GET"]),
        Route("/openapi.json", _endpoint(openapi), methods=["GET"]),
        *(Route(path, _endpoint(not_in_release), methods=ALL_METHODS) for path in NOT_IN_RELEASE),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_exception})
    # /v1/images/generations/ is not a route; do not redirect to one.
    app.router.redirect_slashes = False
    return app
