"""ProviderService: proto <-> domain. Stamps the catalog's watermark on every image.
`registrars` and `SERVICE_NAMES` are what `main.start` hands the runtime's server.

GenerateStream serves many calls over one stream, each in a task of its own; an
image over CHUNK_BYTES goes as chunks, one message each, copied a chunk at a
time, so the service holds each image about once and a large image does not hold
up the other calls' answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator
from typing import Any

import grpc

from provider_svc.service import Dispatcher
from provider_svc.domain import GenerationResult, Image, ImageRequest
from provider_svc.families import family_named
from provider_svc.metrics import generate_call_ended
from provider_svc.sizes import SizeRange
from provider_svc.upstream_errors import timed_out
from quantized.common.v1 import images_pb2
from quantized.provider.v1 import provider_pb2, provider_pb2_grpc
from quantized_runtime import tracing
from quantized_runtime.call_stream import CallStreamServer
from quantized_runtime.enum_names import enum_word
from quantized_runtime.errors import Reason, ServiceError, to_call_error
from quantized_runtime.request_context import current_request_id, new_request_id
from quantized_runtime.server import Registrar
from quantized_runtime.sizes import DEFAULT_SIZE, accepted_sizes
from quantized_runtime.stream_drain import StreamDrain

SERVICE_NAMES = (provider_pb2.DESCRIPTOR.services_by_name["ProviderService"].full_name,)
STREAM_METHOD = f"/{SERVICE_NAMES[0]}/GenerateStream"
# Images larger than this go as chunks of this size on GenerateStream.
CHUNK_BYTES = 1024 * 1024
_DRAINING = provider_pb2.GenerateStreamResponse(draining=True)

# The runtime's interceptor logs unary calls on this logger and does not wrap
# streams, so GenerateStream writes its own line per call here.
rpc_log = logging.getLogger("quantized.rpc")


def _size_range(constraints: images_pb2.ModelConstraints) -> SizeRange | None:
    if not constraints.HasField("size_range"):
        return None
    rules = constraints.size_range
    return SizeRange(min_side=rules.min_side, max_side=rules.max_side, step=rules.step,
                     max_ratio=rules.max_ratio, max_pixels=rules.max_pixels)


def to_domain(request: provider_pb2.GenerateRequest) -> ImageRequest:
    params = request.params
    if not params.prompt:
        raise ServiceError(Reason.INVALID_REQUEST, "params.prompt is required", field="params.prompt")
    return ImageRequest(
        provider=request.provider,
        model_id=request.model_id,
        upstream_model_id=request.upstream_model_id or request.model_id,
        region=request.region,
        prompt=params.prompt,
        family=family_named(request.adapter),
        sizes=accepted_sizes(tuple(request.constraints.sizes)),
        size_range=_size_range(request.constraints),
        quality_values=tuple(request.constraints.quality_values),
        n=params.n or 1,
        max_n=request.constraints.max_n if request.constraints.HasField("max_n") else None,
        size=params.size or DEFAULT_SIZE,
        quality=enum_word(images_pb2.Quality.DESCRIPTOR, params.quality),
        style=enum_word(images_pb2.Style.DESCRIPTOR, params.style),
        background=enum_word(images_pb2.Background.DESCRIPTOR, params.background),
        output_format=enum_word(images_pb2.OutputFormat.DESCRIPTOR, params.output_format),
        output_compression=params.output_compression if params.HasField("output_compression") else None,
        moderation=enum_word(images_pb2.Moderation.DESCRIPTOR, params.moderation),
        seed=params.seed if params.HasField("seed") else None,
        negative_prompt=params.negative_prompt if params.HasField("negative_prompt") else None,
        user=params.user if params.HasField("user") else None,
        request_id=request.request_id,
    )


def _image_proto(image: Image, watermark: int, *, with_data: bool) -> images_pb2.GeneratedImage:
    return images_pb2.GeneratedImage(
        image_data=image.data if with_data else b"",
        mime_type=image.mime_type,
        revised_prompt=image.revised_prompt,
        seed=image.seed,
        watermark=watermark,
        flagged=image.flagged,
        flag_reason=image.flag_reason,
    )


def _response_without_images(result: GenerationResult) -> provider_pb2.GenerateResponse:
    usage = result.usage
    return provider_pb2.GenerateResponse(created=result.created, usage=images_pb2.UpstreamUsage(
        input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
        total_tokens=usage.total_tokens, megapixels=usage.megapixels),
        upstream_seconds=result.upstream_seconds)


def is_chunked(image_data: bytes) -> bool:
    """Whether an image goes on GenerateStream as chunks rather than in its response."""
    return len(image_data) > CHUNK_BYTES


def image_chunks(call_id: int, image_index: int, image_data: bytes) -> Iterator[provider_pb2.GenerateStreamResponse]:
    """An image's bytes as chunk messages, each copied out only when its turn to be written comes."""
    view = memoryview(image_data)
    for start in range(0, len(view), CHUNK_BYTES):
        yield provider_pb2.GenerateStreamResponse(call_id=call_id, chunk=provider_pb2.ImageChunk(
            image_index=image_index, data=bytes(view[start:start + CHUNK_BYTES])))


def stream_answers(call_id: int, result: GenerationResult, watermark: int,
                   ) -> Iterator[provider_pb2.GenerateStreamResponse]:
    """A call's answer on GenerateStream: the chunks of its large images, then the
    response, in which those images have empty image_data."""
    for index, image in enumerate(result.images):
        if is_chunked(image.data):
            yield from image_chunks(call_id, index, image.data)
    answer = provider_pb2.GenerateStreamResponse(call_id=call_id)
    answer.response.CopyFrom(_response_without_images(result))
    answer.response.images.extend(_image_proto(image, watermark, with_data=not is_chunked(image.data))
                                  for image in result.images)
    yield answer


def _error_answer(call_id: int, error: ServiceError) -> provider_pb2.GenerateStreamResponse:
    return provider_pb2.GenerateStreamResponse(call_id=call_id, error=to_call_error(error))


class _StreamedCall:
    """One call on a GenerateStream. A cancel stops it at once while it works, but
    only between messages once it answers: a grpc.aio write interrupted half way
    breaks the whole stream."""

    __slots__ = ("task", "answering", "stopped")

    def __init__(self, start: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]],
                 run: Callable[[_StreamedCall], Coroutine[Any, Any, None]]) -> None:
        self.answering = False
        self.stopped = False
        self.task = start(run(self))

    def stop(self) -> None:
        self.stopped = True
        if not self.answering:
            self.task.cancel()


class _GenerateStream:
    """The calls in flight on one GenerateStream; its lifecycle is the runtime's
    (quantized_runtime.call_stream)."""

    def __init__(self, dispatcher: Dispatcher, context: grpc.aio.ServicerContext, drain: StreamDrain) -> None:
        self._dispatcher = dispatcher
        self._context = context
        self._stream = CallStreamServer(context, drain, _DRAINING)
        self._calls: dict[int, _StreamedCall] = {}

    async def serve(self, requests: AsyncIterator[provider_pb2.GenerateStreamRequest]) -> None:
        await self._stream.serve(requests, self._on_message)

    async def _on_message(self, message: provider_pb2.GenerateStreamRequest) -> None:
        if message.cancel:
            call = self._calls.get(message.call_id)
            if call is not None:
                call.stop()
        elif message.call_id in self._calls:
            await self._context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                      f"call_id {message.call_id} is already in flight")
        else:
            self._start(message)

    def _start(self, message: provider_pb2.GenerateStreamRequest) -> None:
        call_id = message.call_id
        answer = self._traced_answer if tracing.enabled() else self._answer
        call = _StreamedCall(self._stream.start, lambda started: answer(message, started))
        self._calls[call_id] = call
        call.task.add_done_callback(lambda _: self._calls.pop(call_id, None))

    async def _traced_answer(self, message: provider_pb2.GenerateStreamRequest, call: _StreamedCall) -> None:
        """The call inside its server span, a child of the span its traceparent names."""
        with tracing.server_span(STREAM_METHOD.lstrip("/"), message.traceparent, tracing.GRPC_ATTRIBUTES):
            await self._answer(message, call)

    async def _answer(self, message: provider_pb2.GenerateStreamRequest, call: _StreamedCall) -> None:
        # The task runs in a copy of the stream's context: this id is its own.
        current_request_id.set(message.request.request_id or new_request_id())
        started = time.perf_counter()
        outcome = "CANCELLED"
        try:
            try:
                result = await self._generate(message)
            except ServiceError as error:
                outcome = error.reason.value
                answers: Iterable[provider_pb2.GenerateStreamResponse] = [
                    _error_answer(message.call_id, error)]
            except Exception:
                outcome = Reason.INTERNAL.value
                rpc_log.exception("unhandled error in %s", STREAM_METHOD)
                answers = [_error_answer(message.call_id, ServiceError(
                    Reason.INTERNAL, f"internal error (request id {current_request_id.get()})"))]
            else:
                outcome = "OK"
                answers = stream_answers(message.call_id, result, message.request.watermark)
            call.answering = True
            try:
                await self._write_all(answers, call)
            except Exception:
                outcome = "UNSENT"
                rpc_log.warning("the stream ended before an answer was written", exc_info=True)
            if call.stopped:
                outcome = "CANCELLED"
        finally:
            if outcome != "OK":
                tracing.failed(tracing.current_span(), outcome)
            duration = time.perf_counter() - started
            generate_call_ended(outcome, duration)
            rpc_log.info("rpc", extra={"fields": {
                "method": STREAM_METHOD, "call_id": message.call_id, "outcome": outcome,
                "duration_ms": round(duration * 1000, 3)}})

    async def _generate(self, message: provider_pb2.GenerateStreamRequest) -> GenerationResult:
        """The dispatch, bounded by the caller's time left (none when 0)."""
        request = to_domain(message.request)
        budget = message.timeout_seconds if message.timeout_seconds > 0 else None
        try:
            async with asyncio.timeout(budget):
                return await self._dispatcher.generate(request, budget)
        except TimeoutError:
            raise timed_out(request.provider) from None

    async def _write_all(self, answers: Iterable[provider_pb2.GenerateStreamResponse],
                         call: _StreamedCall) -> None:
        """One message at a time: the chunks of a large image take turns with the
        other calls' answers."""
        for answer in answers:
            if call.stopped:
                return
            await self._stream.write(answer)


class ProviderServicer(provider_pb2_grpc.ProviderServiceServicer):
    def __init__(self, dispatcher: Dispatcher, drain: StreamDrain) -> None:
        self._dispatcher = dispatcher
        self._drain = drain

    async def GenerateStream(self, request_iterator: AsyncIterator[provider_pb2.GenerateStreamRequest],
                             context: grpc.aio.ServicerContext) -> None:
        await _GenerateStream(self._dispatcher, context, self._drain).serve(request_iterator)


def registrars(dispatcher: Dispatcher, drain: StreamDrain) -> list[Registrar]:
    servicer = ProviderServicer(dispatcher, drain)
    return [lambda server: provider_pb2_grpc.add_ProviderServiceServicer_to_server(servicer, server)]
