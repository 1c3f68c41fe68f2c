"""The OpenAI-compatible HTTP API (Starlette, with a direct path for generations).

Every response carries `x-request-id`; every error uses the OpenAI error shape;
every request on an API route gets one log line and its metrics (edge/metrics.py).
`/metrics` is not among the routes: it is served on the metrics address only.
The generation route authenticates the caller before it reads the body, then
parses and validates the body and hands the flow the typed request, as the gRPC
ImagesService does with its message. The Idempotency-Key header is the request's
`idempotency_key` field (edge/validation.py reads it); the answer to a repeat of
it carries `Idempotent-Replayed: true`.

`POST /v1/images/generations` is the hot path: `EdgeHttpApp` answers it straight
from the ASGI scope, without Starlette's middleware, routing and Request objects
(about a tenth of the edge's per-request CPU). Everything else, including the other
methods on that path, goes through the Starlette app, and both share `_answer`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from quantized_runtime import tracing
from quantized_runtime.errors import Reason, ServiceError
from quantized_runtime.health import DependencyWatch
from quantized_runtime.request_context import current_request_id, new_request_id

from edge.errors import HttpReason, HttpRejection, error_response, internal_error, service_error_response
from edge.flow import ImagesFlow
from edge.metrics import RequestRecord, status_class
from edge.openapi import openapi_document
from edge.playground_page import playground_routes
from edge.rate_limits import RateLimiter
from edge.readiness import LIVE_BODY, readiness_answer
from edge.render import Base64Text, BodyPart, generation_json
from edge.usage import USAGE_PATH, usage_json, usage_query, usage_query_rejection
from edge.validation import RequestValidator

log = logging.getLogger("quantized.edge.http")

GENERATIONS_PATH = "/v1/images/generations"
REQUEST_ID_HEADER = "x-request-id"
AUTHORIZATION_HEADER = "authorization"
PROVIDER_HEADER = "x-quantized-provider"
# Stripe's name: on the answer to a repeated Idempotency-Key, which was not run again.
REPLAYED_HEADER = (b"idempotent-replayed", b"true")
JSON_MEDIA_TYPE = "application/json"

# Response parts up to this size are joined into one ASGI message (one socket write);
# a larger part (a big base64 image) is sent on its own rather than copied again.
COALESCE_BYTES = 64 * 1024

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

Body = bytes | list[BodyPart]
HeaderLookup = Callable[[str], str | None]


@dataclass(frozen=True, slots=True)
class WithHeaders:
    """A handler's body with extra response headers."""

    body: Body
    headers: list[tuple[bytes, bytes]]


def _coalesce(parts: Sequence[BodyPart]) -> list[BodyPart]:
    """Adjacent small parts joined; parts over COALESCE_BYTES kept whole and apart."""
    merged: list[BodyPart] = []
    pending: list[bytes] = []
    pending_size = 0
    for part in parts:
        if isinstance(part, Base64Text) or len(part) > COALESCE_BYTES:
            if pending:
                merged.append(b"".join(pending))
                pending, pending_size = [], 0
            merged.append(part)
        elif pending_size + len(part) > COALESCE_BYTES:
            merged.append(b"".join(pending))
            pending, pending_size = [part], len(part)
        else:
            pending.append(part)
            pending_size += len(part)
    if pending or not merged:
        merged.append(b"".join(pending))
    return merged


async def _send_json(send: Send, status: int, body: Body, request_id: str,
                     headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """A JSON response with one Content-Length, its body sent as few messages as sensible."""
    parts = _coalesce(body) if isinstance(body, list) else [body]
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-length", str(sum(len(part) for part in parts)).encode()),
        (b"content-type", JSON_MEDIA_TYPE.encode()),
        (REQUEST_ID_HEADER.encode(), request_id.encode()),
        *headers,
    ]})
    last = len(parts) - 1
    for index, part in enumerate(parts):
        if not isinstance(part, Base64Text):
            await send({"type": "http.response.body", "body": part, "more_body": index < last})
            continue
        for piece in part.pieces():
            # Each send waits while the socket's buffer is full, so pieces go out
            # as they are encoded instead of piling up.
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        if index == last:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


class JsonResponse(Response):
    """A Starlette response written by `_send_json`, so both paths send the same bytes."""

    def __init__(self, status: int, body: Body, request_id: str,
                 headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
        super().__init__(status_code=status)
        self._body = body
        self._request_id = request_id
        self._extra_headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _send_json(send, self.status_code, self._body, self._request_id, self._extra_headers)


Answer = tuple[int, Body, str, list[tuple[bytes, bytes]]]


async def _answer(handler: Callable[[RequestRecord], Awaitable[Body | WithHeaders]], method: str,
                  route: str) -> Answer:
    """The request's server span, the root of its trace, when tracing is on: the
    edge starts every trace (a client's traceparent header is not trusted)."""
    with tracing.server_span(f"{method} {route}", None, {"http.request.method": method, "url.path": route}) as span:
        answer = await _answer_untraced(handler, method, route)
        if span is not None:
            span.set_attributes({"http.response.status_code": answer[0], "quantized.request_id": answer[2]})
            if answer[0] >= 500:
                tracing.failed(span, str(answer[0]))
        return answer


async def _answer_untraced(handler: Callable[[RequestRecord], Awaitable[Body | WithHeaders]], method: str,
                           route: str) -> Answer:
    """Request id, one log line and the metrics (the handler fills in the
    record), and every failure turned into an OpenAI error body (with its extra
    headers, such as Retry-After)."""
    request_id = new_request_id()
    token = current_request_id.set(request_id)
    record = RequestRecord(route)
    headers: list[tuple[bytes, bytes]] = []
    try:
        try:
            status, body = 200, await handler(record)
            if isinstance(body, WithHeaders):
                body, headers = body.body, body.headers
        except ServiceError as error:
            status, body, headers = service_error_response(error)
        except HttpRejection as rejection:
            status, body = error_response(rejection.reason, rejection.message, rejection.param)
        except Exception:
            log.exception("unhandled error", extra={"fields": {"route": route}})
            status, body, headers = service_error_response(internal_error(request_id))
        record.finish(status, status_class(status), method=method)
        return status, body, request_id, headers
    finally:
        current_request_id.reset(token)


Handler = Callable[[Request, RequestRecord], Awaitable[Body | WithHeaders]]


def _endpoint(route: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """`route` is the route's path as declared, the request's `route` label."""
    async def endpoint(request: Request) -> Response:
        status, body, request_id, headers = await _answer(lambda record: handler(request, record),
                                                          request.method, route)
        return JsonResponse(status, body, request_id, headers)

    return endpoint


async def _read_json(header: HeaderLookup, receive: Receive, max_body_bytes: int) -> Any:
    content_type = header("content-type") or ""
    if content_type.split(";", 1)[0].strip().lower() != JSON_MEDIA_TYPE:
        raise HttpRejection(HttpReason.UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json")
    declared = header("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
        raise _too_large(max_body_bytes)
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HttpRejection(HttpReason.CLIENT_DISCONNECTED, "the client disconnected while sending the body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_body_bytes:
            raise _too_large(max_body_bytes)
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, RecursionError):
        raise HttpRejection(HttpReason.INVALID_JSON, "the request body is not valid JSON") from None


def _too_large(limit: int) -> HttpRejection:
    return HttpRejection(HttpReason.REQUEST_TOO_LARGE, f"the request body is larger than {limit} bytes")


def _scope_header(scope: Scope) -> HeaderLookup:
    """Header lookup on the raw ASGI headers: the first value, like Starlette's Headers.get."""
    raw = scope["headers"]

    def header(name: str) -> str | None:
        key = name.encode()
        for found, value in raw:
            if found == key:
                return value.decode("latin-1")
        return None

    return header


def _client_address(scope: Scope) -> str:
    """The peer's IP address (the edge reads no proxy headers, so behind a proxy it is the proxy's)."""
    client = scope.get("client")
    return client[0] if client else ""


class EdgeHttpApp:
    """The ASGI app uvicorn runs: generations directly, everything else through Starlette."""

    def __init__(self, flow: ImagesFlow, validator: RequestValidator, max_body_bytes: int,
                 limiter: RateLimiter, readiness: DependencyWatch) -> None:
        self._flow = flow
        self._limiter = limiter
        self._validator = validator
        self._max_body_bytes = max_body_bytes
        self._readiness = readiness
        self.starlette = self._starlette_app()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == GENERATIONS_PATH:
            header = _scope_header(scope)
            status, body, request_id, headers = await _answer(
                lambda record: self._generate(header, receive, _client_address(scope), record),
                "POST", GENERATIONS_PATH)
            await _send_json(send, status, body, request_id, headers)
            return
        await self.starlette(scope, receive, send)

    async def _generate(self, header: HeaderLookup, receive: Receive, client_address: str,
                        record: RequestRecord) -> list[BodyPart] | WithHeaders:
        budget = self._flow.budget()
        caller = await self._flow.authenticate(header(AUTHORIZATION_HEADER), budget, client_address)
        record.account_id, record.key_id = caller.account_id, caller.key_id
        async with self._limiter.admit(caller.key_id, caller.account_id, caller.key_limit, caller.account_limit):
            request = self._validator.from_json(await _read_json(header, receive, self._max_body_bytes), header)
            outcome = await self._flow.generate(caller, request, header(PROVIDER_HEADER) or "", budget, record)
        if outcome.replay_of:
            record.replayed = True
            return WithHeaders(generation_json(outcome), [REPLAYED_HEADER])
        return generation_json(outcome)

    def _starlette_app(self) -> ASGIApp:
        flow = self._flow
        openapi_body = json.dumps(openapi_document(self._validator)).encode()

        async def generate_images(request: Request, record: RequestRecord) -> list[BodyPart] | WithHeaders:
            return await self._generate(request.headers.get, request.receive, _client_address(request.scope),
                                        record)

        async def list_models(request: Request, record: RequestRecord) -> bytes:
            budget = flow.budget()
            caller = await flow.authenticate(request.headers.get(AUTHORIZATION_HEADER), budget,
                                             _client_address(request.scope))
            record.account_id, record.key_id = caller.account_id, caller.key_id
            return (await flow.list_models(budget)).json

        async def usage(request: Request, record: RequestRecord) -> bytes:
            budget = flow.budget()
            caller = await flow.authenticate(request.headers.get(AUTHORIZATION_HEADER), budget,
                                             _client_address(request.scope))
            record.account_id, record.key_id = caller.account_id, caller.key_id
            async with self._limiter.admit(caller.key_id, caller.account_id, caller.key_limit,
                                           caller.account_limit):
                try:
                    report = await flow.usage(caller, usage_query(request.query_params.multi_items()), budget)
                except ServiceError as error:
                    raise usage_query_rejection(error) from None
            return usage_json(report)

        async def openapi(request: Request, record: RequestRecord) -> bytes:
            return openapi_body

        # Probes for load balancers and orchestrators: no authentication, no log line
        # (they come every few seconds), outside /v1 and the OpenAPI document.
        async def liveness(request: Request) -> Response:
            return JsonResponse(200, LIVE_BODY, new_request_id())

        async def readiness(request: Request) -> Response:
            status, body = readiness_answer(self._readiness)
            return JsonResponse(status, body, new_request_id())

        async def not_in_release(request: Request, record: RequestRecord) -> bytes:
            raise HttpRejection(HttpReason.NOT_AVAILABLE_IN_THIS_RELEASE, NOT_IN_RELEASE[request.url.path])

        def router_error(exc: Exception, reason: Reason | HttpReason, message: str) -> Response:
            """Starlette's router's own rejection, in the OpenAI error shape (headers such as Allow kept)."""
            assert isinstance(exc, HTTPException)
            status, body = error_response(reason, message)
            headers = [(name.lower().encode("latin-1"), value.encode("latin-1"))
                       for name, value in (exc.headers or {}).items()]
            return JsonResponse(status, body, new_request_id(), headers)

        async def route_not_found(request: Request, exc: Exception) -> Response:
            return router_error(exc, Reason.ROUTE_NOT_FOUND, f"no such route: {request.url.path}")

        async def method_not_allowed(request: Request, exc: Exception) -> Response:
            return router_error(exc, HttpReason.METHOD_NOT_ALLOWED,
                                f"method {request.method} is not allowed on {request.url.path}")

        # The generations route also lives here: it answers the other methods with 405,
        # and serves POST when the scope path does not match exactly (a root_path).
        routes = [
            Route(GENERATIONS_PATH, _endpoint(GENERATIONS_PATH, generate_images), methods=["POST"]),
            Route("/v1/models", _endpoint("/v1/models", list_models), methods=["GET"]),
            Route(USAGE_PATH, _endpoint(USAGE_PATH, usage), methods=["GET"]),
            Route("/openapi.json", _endpoint("/openapi.json", openapi), methods=["GET"]),
            Route("/healthz", liveness, methods=["GET"]),
            Route("/readyz", readiness, methods=["GET"]),
            *playground_routes(),
            *(Route(path, _endpoint(path, not_in_release), methods=ALL_METHODS) for path in NOT_IN_RELEASE),
        ]
        # Keyed by the status Starlette's router raises; the status answered comes from the table.
        app = Starlette(routes=routes, exception_handlers={
            HTTPStatus.NOT_FOUND: route_not_found, HTTPStatus.METHOD_NOT_ALLOWED: method_not_allowed})
        # /v1/images/generations/ is not a route; do not redirect to one.
        app.router.redirect_slashes = False
        return app


def create_app(flow: ImagesFlow, validator: RequestValidator, max_body_bytes: int,
               limiter: RateLimiter, readiness: DependencyWatch) -> EdgeHttpApp:
    return EdgeHttpApp(flow, validator, max_body_bytes, limiter, readiness)
