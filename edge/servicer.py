"""The public gRPC ImagesService: the same flow, validation and errors as HTTP.

The bearer token travels in `authorization` metadata, a pinned provider in
`x-quantized-provider`, an idempotency key in the request's `idempotency_key`;
the request id is sent back in the initial metadata, and a replayed answer says
so in the trailing metadata (`idempotent-replayed: true`).
`registrars` and `SERVICE_NAMES` are what `main.start` hands the runtime's server.
Each call writes the edge's one log line per request and its metrics
(edge/metrics.py), in place of the runtime interceptor's line.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from quantized.images.v1 import images_pb2, images_pb2_grpc
from quantized_runtime.errors import Reason, ServiceError
from quantized_runtime.request_context import REQUEST_ID_METADATA_KEY, current_request_id
from quantized_runtime.server import Registrar

from edge.errors import HTTP_ERROR_BY_REASON, internal_error
from edge.flow import Caller, ImagesFlow, RequestBudget
from edge.metrics import RequestRecord, status_class
from edge.rate_limits import RateLimiter
from edge.render import generation_proto
from edge.validation import RequestValidator

log = logging.getLogger("quantized.edge.grpc")

ResponseT = TypeVar("ResponseT")

AUTHORIZATION_METADATA_KEY = "authorization"
PROVIDER_METADATA_KEY = "x-quantized-provider"
# In the trailing metadata of the answer to a repeated idempotency key, which
# carries the first request's request_id (the initial metadata has this call's).
REPLAYED_METADATA = ("idempotent-replayed", "true")

SERVICE_NAMES = (images_pb2.DESCRIPTOR.services_by_name["ImagesService"].full_name,)
GENERATE_ROUTE = f"/{SERVICE_NAMES[0]}/Generate"
LIST_MODELS_ROUTE = f"/{SERVICE_NAMES[0]}/ListModels"
USAGE_ROUTE = f"/{SERVICE_NAMES[0]}/GetUsage"


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return {key: value for key, value in context.invocation_metadata() or ()
            if isinstance(value, str)}


def peer_address(peer: str | None) -> str:
    """The address of a gRPC peer such as `ipv4:10.0.0.7:51234` or `ipv6:[::1]:5000`, without its port."""
    kind, _, address = (peer or "").partition(":")
    if kind not in ("ipv4", "ipv6"):
        return peer or ""
    return address.rsplit(":", 1)[0].strip("[]")


class ImagesServicer(images_pb2_grpc.ImagesServiceServicer):
    def __init__(self, flow: ImagesFlow, validator: RequestValidator, limiter: RateLimiter) -> None:
        self._flow = flow
        self._limiter = limiter
        self._validator = validator

    async def Generate(self, request: images_pb2.GenerateRequest,
                       context: grpc.aio.ServicerContext) -> images_pb2.GenerateResponse:
        async def run(metadata: dict[str, str], request_id: str,
                      record: RequestRecord) -> images_pb2.GenerateResponse:
            budget = self._flow.budget(context.time_remaining())
            caller = await self._authenticated(context, metadata, budget, record)
            async with self._limiter.admit(caller.key_id, caller.account_id, caller.key_limit,
                                           caller.account_limit):
                outcome = await self._flow.generate(caller, self._validator.from_proto(request),
                                                    metadata.get(PROVIDER_METADATA_KEY, ""), budget, record)
            if outcome.replay_of:
                record.replayed = True
                context.set_trailing_metadata((REPLAYED_METADATA,))
            return generation_proto(outcome, outcome.replay_of or request_id)

        return await self._guarded(context, GENERATE_ROUTE, run)

    async def ListModels(self, request: images_pb2.ListModelsRequest,
                         context: grpc.aio.ServicerContext) -> images_pb2.ListModelsResponse:
        async def run(metadata: dict[str, str], request_id: str,
                      record: RequestRecord) -> images_pb2.ListModelsResponse:
            budget = self._flow.budget(context.time_remaining())
            await self._authenticated(context, metadata, budget, record)
            return (await self._flow.list_models(budget)).proto

        return await self._guarded(context, LIST_MODELS_ROUTE, run)

    async def GetUsage(self, request: images_pb2.GetUsageRequest,
                       context: grpc.aio.ServicerContext) -> images_pb2.GetUsageResponse:
        async def run(metadata: dict[str, str], request_id: str,
                      record: RequestRecord) -> images_pb2.GetUsageResponse:
            budget = self._flow.budget(context.time_remaining())
            caller = await self._authenticated(context, metadata, budget, record)
            async with self._limiter.admit(caller.key_id, caller.account_id, caller.key_limit,
                                           caller.account_limit):
                report = await self._flow.usage(caller, request.query, budget)
            return images_pb2.GetUsageResponse(report=report, request_id=request_id)

        return await self._guarded(context, USAGE_ROUTE, run)

    async def _authenticated(self, context: grpc.aio.ServicerContext, metadata: dict[str, str],
                             budget: RequestBudget, record: RequestRecord) -> Caller:
        caller = await self._flow.authenticate(metadata.get(AUTHORIZATION_METADATA_KEY), budget,
                                               peer_address(context.peer()))
        record.account_id, record.key_id = caller.account_id, caller.key_id
        return caller

    async def _guarded(self, context: grpc.aio.ServicerContext, route: str,
                       run: Callable[[dict[str, str], str, RequestRecord], Awaitable[ResponseT]]) -> ResponseT:
        """No unexplained failure, and one log line with the metrics; the request
        id was minted for this call by the server's interceptor (a caller's own
        x-request-id is never reused: it keys billing's idempotent credit hold).
        The line's status is the error reason (`OK` for none); the status class
        is that of the HTTP status the reason maps to, as on HTTP."""
        request_id = current_request_id.get()
        record = RequestRecord(route)
        await context.send_initial_metadata(((REQUEST_ID_METADATA_KEY, request_id),))
        try:
            answer = await run(_metadata(context), request_id, record)
        except ServiceError as error:
            record.finish(error.reason.value, status_class(HTTP_ERROR_BY_REASON[error.reason].status))
            raise
        except Exception:
            log.exception("unhandled error")
            record.finish(Reason.INTERNAL.value, status_class(HTTP_ERROR_BY_REASON[Reason.INTERNAL].status))
            raise internal_error(request_id) from None
        record.finish("OK", status_class(200))
        return answer


def registrars(flow: ImagesFlow, validator: RequestValidator, limiter: RateLimiter) -> list[Registrar]:
    servicer = ImagesServicer(flow, validator, limiter)
    return [lambda server: images_pb2_grpc.add_ImagesServiceServicer_to_server(servicer, server)]
