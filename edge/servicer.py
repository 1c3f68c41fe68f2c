"""The public gRPC ImagesService: the same flow, validation and errors as HTTP.

The bearer token travels in `authorization` metadata, a pinned provider in
`x-quantized-provider`; the request id is sent back in the initial metadata.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc

from quantized.images.v1 import images_pb2, images_pb2_grpc
from quantized_runtime.errors import ServiceError
from quantized_runtime.request_context import REQUEST_ID_METADATA_KEY, current_request_id

from edge.errors import internal_error
from edge.flow import ImagesFlow
from edge.render import generation_proto, models_proto
from edge.validation import RequestValidator

log = logging.getLogger("quantized.edge.grpc")

AUTHORIZATION_METADATA_KEY = "authorization"
PROVIDER_METADATA_KEY = "x-quantized-provider"


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return {key: value for key, value in context.invocation_metadata() or ()
            if isinstance(value, str)}


class ImagesServicer(images_pb2_grpc.ImagesServiceServicer):
    def __init__(self, flow: ImagesFlow, validator: RequestValidator) -> None:
        self._flow = flow
        self._validator = validator

    async def Generate(self, request: images_pb2.GenerateRequest,
                       context: grpc.aio.ServicerContext) -> images_pb2.GenerateResponse:
        async def load_request() -> Any:
            return self._validator.from_proto(request)

        async def run(metadata: dict[str, str], request_id: str) -> images_pb2.GenerateResponse:
            outcome = await self._flow.generate(
                metadata.get(AUTHORIZATION_METADATA_KEY), metadata.get(PROVIDER_METADATA_KEY, ""),
                load_request, self._flow.deadline(context.time_remaining()))
            return generation_proto(outcome, request_id)

        return await self._guarded(context, run)

    async def ListModels(self, request: images_pb2.ListModelsRequest,
                         context: grpc.aio.ServicerContext) -> images_pb2.ListModelsResponse:
        async def run(metadata: dict[str, str], request_id: str) -> images_pb2.ListModelsResponse:
            return await self._flow.list_models(metadata.get(AUTHORIZATION_METADATA_KEY),
                                                self._flow.deadline(context.time_remaining()), models_proto)

        return await self._guarded(context, run)

    async def _guarded(self, context: grpc.aio.ServicerContext, run: Any) -> Any:
        """No unexplained failure; the request id was minted for this call by the
        server's interceptor (a caller's own x-request-id is never reused: it keys
        billing's idempotent credit hold)."""
        request_id = current_request_id.get()
        await context.send_initial_metadata(((REQUEST_ID_METADATA_KEY, request_id),))
        try:
            return await run(_metadata(context), request_id)
        except ServiceError:
            raise
        except Exception:
            log.exception("unhandled error")
            raise internal_error(request_id) from None
