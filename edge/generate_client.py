"""Generate calls to provider_svc, multiplexed over one long-lived GenerateStream.

A unary gRPC call costs both ends far more CPU and latency than a request and
its answer on an open stream (docs/benchmarks.md). So the edge keeps one
GenerateStream open and sends each Generate on it with a call id of its own;
provider_svc answers each call when it is done, in any order. An image over a
megabyte comes as chunks, collected per image and joined once when the call's
response arrives.

The stream's lifecycle (opening, the drain notice, failing the calls of a
stream that breaks) is the shared runtime's (quantized_runtime.call_stream).
A caller that times out or is cancelled sends a cancel for its call id, so
provider_svc stops working for nobody; whatever still arrives for that id is
dropped. Each call has its own client span (when tracing is on), whose
traceparent its message carries.
"""

from __future__ import annotations

import asyncio
import logging

from quantized.provider.v1 import provider_pb2, provider_pb2_grpc
from quantized_runtime import tracing
from quantized_runtime.call_stream import CallStreamClient, fail_waiter
from quantized_runtime.errors import Reason, ServiceError, from_call_error

log = logging.getLogger("quantized.edge.generate")

# The client span of one call on the stream; its traceparent goes in the call's message.
GENERATE_SPAN = "quantized.provider.v1.ProviderService/GenerateStream"


class _Call:
    __slots__ = ("waiter", "chunks")

    def __init__(self, waiter: asyncio.Future[provider_pb2.GenerateResponse]) -> None:
        self.waiter = waiter
        # image index -> the parts of its bytes so far, in order.
        self.chunks: dict[int, list[bytes]] = {}


class GenerateClient(CallStreamClient[provider_pb2.GenerateStreamRequest, provider_pb2.GenerateStreamResponse,
                                      _Call]):
    def __init__(self, stub: provider_pb2_grpc.ProviderServiceStub) -> None:
        super().__init__(stub.GenerateStream, stream="generate stream", peer="provider_svc", logger=log)

    async def generate(self, request: provider_pb2.GenerateRequest, timeout: float,
                       ) -> provider_pb2.GenerateResponse:
        """The call's response, its ServiceError, or INTERNAL when provider_svc
        does not answer within `timeout` or the stream breaks."""
        self._refuse_if_closed()
        with tracing.client_span(GENERATE_SPAN, tracing.GRPC_ATTRIBUTES) as span:
            call_id = self._new_call_id()
            waiter: asyncio.Future[provider_pb2.GenerateResponse] = asyncio.get_running_loop().create_future()
            message = provider_pb2.GenerateStreamRequest(call_id=call_id, request=request, timeout_seconds=timeout)
            if span is not None:
                span.set_attributes({"quantized.provider": request.provider, "quantized.model": request.model_id})
            traceparent = tracing.traceparent()
            if traceparent:
                message.traceparent = traceparent
            self._start(call_id, _Call(waiter), message)
            cancel = provider_pb2.GenerateStreamRequest(call_id=call_id, cancel=True)
            return await self._wait(waiter, timeout, give_up=lambda: self._abandon(call_id, cancel))

    def _call_id(self, answer: provider_pb2.GenerateStreamResponse) -> int:
        return answer.call_id

    def _answered(self, call: _Call, answer: provider_pb2.GenerateStreamResponse) -> bool:
        kind = answer.WhichOneof("answer")
        if kind == "chunk":
            call.chunks.setdefault(answer.chunk.image_index, []).append(answer.chunk.data)
            return False
        if call.waiter.done():
            return True
        if kind == "response":
            _deliver(call, answer.response)
        elif kind == "error":
            call.waiter.set_exception(from_call_error(answer.error))
        else:
            call.waiter.set_exception(ServiceError(Reason.INTERNAL, "provider_svc sent an empty answer"))
        return True

    def _failed(self, call: _Call, failure: ServiceError) -> None:
        fail_waiter(call.waiter, failure)


def _deliver(call: _Call, response: provider_pb2.GenerateResponse) -> None:
    """The response with each chunked image's bytes put back, joined once."""
    for index, parts in call.chunks.items():
        if not 0 <= index < len(response.images):
            call.waiter.set_exception(ServiceError(
                Reason.INTERNAL, f"provider_svc sent chunks for image {index} of {len(response.images)}"))
            return
        data = b"".join(parts)
        parts.clear()  # so the image is held twice at most, while it is copied into the message
        response.images[index].image_data = data
    call.waiter.set_result(response)
