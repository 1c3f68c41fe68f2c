"""GenerateStream through a real provider_svc server and the fake upstreams: calls
multiplexed by call id, large images in chunks, errors as CallErrors, cancel,
timeouts, and the end of the stream."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from provider_svc.servicer import CHUNK_BYTES, STREAM_METHOD
from quantized.common.v1 import images_pb2
from quantized.provider.v1 import provider_pb2, provider_pb2_grpc
from quantized_runtime.channels import channel_options
from quantized_runtime.errors import Reason, from_call_error
from tests.fake_upstreams import big_png
from tests.fake_upstreams.bedrock import NOVA
from tests.polling import eventually
from tests.provider.conftest import Harness, generate_request

ANSWER_WAIT_SECONDS = 60
# Long enough that a stop which waited it out would show.
GRACE_SECONDS = 30.0


class Session:
    """One GenerateStream, written and read as the edge would."""

    def __init__(self, stub: provider_pb2_grpc.ProviderServiceStub) -> None:
        self.call = stub.GenerateStream()
        self._ids = itertools.count(1)
        # Set when provider_svc says it is stopping.
        self.draining = False

    async def send(self, model: str, *, timeout: float = 30, **fields: Any) -> int:
        call_id = next(self._ids)
        await self.call.write(provider_pb2.GenerateStreamRequest(
            call_id=call_id, request=generate_request(model, **fields), timeout_seconds=timeout))
        return call_id

    async def cancel(self, call_id: int) -> None:
        await self.call.write(provider_pb2.GenerateStreamRequest(call_id=call_id, cancel=True))

    async def read(self) -> provider_pb2.GenerateStreamResponse:
        answer = await self._next()
        assert answer is not grpc.aio.EOF, "the stream ended"
        return answer

    async def _next(self) -> provider_pb2.GenerateStreamResponse | Any:
        """The next answer or EOF; a draining notice is noted, not returned."""
        while (answer := await asyncio.wait_for(self.call.read(), ANSWER_WAIT_SECONDS)) is not grpc.aio.EOF:
            if not answer.draining:
                return answer
            self.draining = True
        return answer

    async def final_answers(self, count: int) -> dict[int, provider_pb2.GenerateStreamResponse]:
        """The next `count` responses or errors, by call id (chunks are not expected)."""
        answers = {}
        for _ in range(count):
            answer = await self.read()
            assert answer.WhichOneof("answer") in ("response", "error")
            answers[answer.call_id] = answer
        return answers

    async def rest(self) -> list[provider_pb2.GenerateStreamResponse]:
        """Every message until the stream ends."""
        answers = []
        while (answer := await self._next()) is not grpc.aio.EOF:
            answers.append(answer)
        return answers


def outcomes(caplog: pytest.LogCaptureFixture) -> dict[int, str]:
    """call id -> outcome, from provider_svc's one log line per stream call."""
    return {record.fields["call_id"]: record.fields["outcome"] for record in caplog.records
            if record.getMessage() == "rpc" and record.fields.get("method") == STREAM_METHOD}


async def logged_outcomes(caplog: pytest.LogCaptureFixture, *call_ids: int) -> dict[int, str]:
    """outcomes(), once each of call_ids has its line: it is written just after
    the call's last answer, so the answer may arrive first."""
    await eventually(lambda: set(call_ids) <= outcomes(caplog).keys())
    return outcomes(caplog)


@pytest.fixture
def rpc_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="quantized.rpc")
    return caplog


async def test_concurrent_calls_are_answered_by_call_id_as_each_finishes(
        harness: Harness, rpc_log: pytest.LogCaptureFixture) -> None:
    session = Session(harness.stub)
    harness.openai.hold()
    held = await session.send("gpt-image-1", watermark=images_pb2.WATERMARK_C2PA, prompt="a fox")
    nova = await session.send(NOVA, watermark=images_pb2.WATERMARK_PROVENANCE, prompt="a hedgehog")
    sandbox = await session.send("sandbox-image-1", n=2, prompt="a badger")

    first = await session.final_answers(2)
    harness.openai.release()
    last = await session.final_answers(1)

    assert set(first) == {nova, sandbox} and set(last) == {held}
    answers = {**first, **last}
    assert all(answer.WhichOneof("answer") == "response" for answer in answers.values())
    expected = {held: (1, images_pb2.WATERMARK_C2PA), nova: (1, images_pb2.WATERMARK_PROVENANCE),
                sandbox: (2, images_pb2.WATERMARK_NONE)}
    for call_id, (count, watermark) in expected.items():
        images = answers[call_id].response.images
        assert len(images) == count and all(image.image_data and image.watermark == watermark
                                            for image in images)
    assert harness.openai.last.json()["prompt"] == "a fox"
    assert harness.bedrock.last.json()["textToImageParams"]["text"] == "a hedgehog"
    assert await logged_outcomes(rpc_log, held, nova, sandbox) == {held: "OK", nova: "OK", sandbox: "OK"}


@pytest.fixture
async def slow_reader(harness: Harness) -> AsyncIterator[Session]:
    """A session whose HTTP/2 window stays at 2 MiB: what it does not read holds
    provider_svc's writes back, as a slow client on a long path would."""
    options = [*channel_options(), ("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 2 * CHUNK_BYTES)]
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{harness.running.port}", options=options)
    try:
        yield Session(provider_pb2_grpc.ProviderServiceStub(channel))
    finally:
        await channel.close()


async def test_a_large_image_comes_in_chunks_and_a_small_call_is_answered_between_them(
        harness: Harness, slow_reader: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    generated: list[str] = []
    dispatch = harness.running.dispatcher.generate

    async def observed(request: Any, budget: Any) -> Any:
        result = await dispatch(request, budget)
        generated.append(request.provider)
        return result

    monkeypatch.setattr(harness.running.dispatcher, "generate", observed)
    big = big_png(30 * 1024 * 1024)
    harness.openai.image_override = big
    session = slow_reader
    large = await session.send("gpt-image-1", timeout=120)
    first = await session.read()
    assert first.call_id == large and first.WhichOneof("answer") == "chunk"

    # The large answer now waits on flow control until this side reads on; the
    # small call's answer, once generated, queues for its turn between two chunks.
    small = await session.send("sandbox-image-1")
    await eventually(lambda: "sandbox" in generated)
    await session.call.done_writing()
    answers = [first, *await session.rest()]

    order = [(answer.call_id, answer.WhichOneof("answer")) for answer in answers]
    assert (large, "chunk") in order[order.index((small, "response")):]
    assert order[-1] == (large, "response")
    chunks = [answer.chunk for answer in answers if answer.call_id == large and answer.HasField("chunk")]
    assert all(chunk.image_index == 0 and 0 < len(chunk.data) <= CHUNK_BYTES for chunk in chunks)
    assert b"".join(chunk.data for chunk in chunks) == big
    response = answers[-1].response
    assert len(response.images) == 1 and response.images[0].image_data == b""
    assert response.images[0].mime_type == "image/png"
    assert await session.call.code() == grpc.StatusCode.OK


@pytest.mark.parametrize(("setup", "model", "fields", "reason", "fragment"), [
    (lambda h: h.openai.always(h.openai.error("rate_limit")), "gpt-image-1", {},
     Reason.UPSTREAM_UNAVAILABLE, "openai: rate limited by upstream"),
    (lambda h: h.bedrock.then(h.bedrock.error("ValidationException")), NOVA, {},
     Reason.UPSTREAM_REJECTED, "the bedrock upstream rejected the request (request id "),
    (lambda h: None, "gpt-image-1", {"prompt": ""}, Reason.INVALID_REQUEST, "params.prompt is required"),
    (lambda h: None, "gpt-image-1", {"provider": "midjourney"}, Reason.PROVIDER_NOT_OFFERED, "midjourney"),
], ids=["upstream 429", "upstream rejects a parameter", "no prompt", "unknown provider"])
async def test_a_failed_call_is_a_call_error_and_the_stream_carries_on(
        harness: Harness, rpc_log: pytest.LogCaptureFixture, setup: Callable[[Harness], None], model: str,
        fields: dict[str, Any], reason: Reason, fragment: str) -> None:
    setup(harness)
    session = Session(harness.stub)
    failing = await session.send(model, **fields)
    [answer] = (await session.final_answers(1)).values()

    assert answer.call_id == failing and answer.WhichOneof("answer") == "error"
    error = from_call_error(answer.error)
    assert error.reason is reason and fragment in error.message
    if reason in (Reason.UPSTREAM_UNAVAILABLE, Reason.UPSTREAM_REJECTED):
        assert error.metadata["provider"] == ("openai" if model == "gpt-image-1" else "bedrock")
    after = await session.send("sandbox-image-1")
    assert (await session.final_answers(1))[after].HasField("response")
    assert await logged_outcomes(rpc_log, failing, after) == {failing: reason.value, after: "OK"}


async def test_an_unexpected_failure_is_a_generic_internal_error_logged_with_its_request_id(
        harness: Harness, rpc_log: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    async def crash(*args: Any) -> Any:
        raise RuntimeError("the upstream key is sk-live-secret")

    monkeypatch.setattr(harness.running.dispatcher, "generate", crash)
    session = Session(harness.stub)
    await session.call.write(provider_pb2.GenerateStreamRequest(
        call_id=7, request=generate_request("gpt-image-1", request_id="req_crash"), timeout_seconds=30))
    answer = await session.read()

    error = from_call_error(answer.error)
    assert answer.call_id == 7 and error.reason is Reason.INTERNAL
    assert error.message == "internal error (request id req_crash)"
    [logged] = [record for record in rpc_log.records if record.levelno == logging.ERROR]
    assert logged.exc_info is not None and "sk-live-secret" in str(logged.exc_info[1])
    assert await logged_outcomes(rpc_log, 7) == {7: Reason.INTERNAL.value}


async def test_a_cancel_stops_its_call_and_it_gets_no_answer(
        harness: Harness, rpc_log: pytest.LogCaptureFixture) -> None:
    session = Session(harness.stub)
    harness.openai.hold()
    slow = await session.send("gpt-image-1")
    await eventually(lambda: len(harness.openai.requests) == 1)

    await session.cancel(slow)
    other = await session.send("sandbox-image-1")
    await session.call.done_writing()

    # Had the call gone on, the end of the stream would wait for the held upstream.
    answers = await session.rest()
    assert [answer.call_id for answer in answers] == [other]
    assert await logged_outcomes(rpc_log, slow, other) == {slow: "CANCELLED", other: "OK"}


async def test_the_callers_time_left_bounds_a_slow_upstream(harness_factory: Any) -> None:
    harness = await harness_factory(upstream_timeout_seconds=60)
    harness.openai.hold()
    session = Session(harness.stub)
    await session.send("gpt-image-1", timeout=0.3)

    [answer] = (await session.final_answers(1)).values()

    error = from_call_error(answer.error)
    assert error.reason is Reason.UPSTREAM_UNAVAILABLE and error.message == "openai: upstream timed out"


async def test_after_the_caller_closes_its_side_the_calls_in_flight_are_answered(harness: Harness) -> None:
    session = Session(harness.stub)
    harness.openai.hold()
    call_id = await session.send("gpt-image-1")
    await session.call.done_writing()
    await eventually(lambda: len(harness.openai.requests) == 1)
    harness.openai.release()

    answers = await session.rest()

    assert [(answer.call_id, answer.WhichOneof("answer")) for answer in answers] == [(call_id, "response")]
    assert await session.call.code() == grpc.StatusCode.OK


async def test_cancelling_the_stream_cancels_its_calls(harness: Harness, rpc_log: pytest.LogCaptureFixture) -> None:
    session = Session(harness.stub)
    harness.openai.hold()
    call_id = await session.send("gpt-image-1")
    await eventually(lambda: len(harness.openai.requests) == 1)

    session.call.cancel()

    assert await logged_outcomes(rpc_log, call_id) == {call_id: "CANCELLED"}


async def test_stopping_tells_the_caller_and_answers_every_call_until_it_closes_its_side(
        harness_factory: Any, rpc_log: pytest.LogCaptureFixture) -> None:
    harness = await harness_factory()
    session = Session(harness.stub)
    harness.openai.hold()
    in_flight = await session.send("gpt-image-1", prompt="a fox")
    await eventually(lambda: len(harness.openai.requests) == 1)
    # A second provider_svc on the same port: new connections reach it once the first stops listening.
    await harness_factory(listen=f"127.0.0.1:{harness.running.port}")
    started = time.monotonic()
    # As on SIGTERM (serve_until_signal); the fixture stops the rest.
    stopping = asyncio.get_running_loop().create_task(harness.running.server.stop(GRACE_SECONDS))

    notice = await asyncio.wait_for(session.call.read(), ANSWER_WAIT_SECONDS)
    assert notice.draining and not notice.call_id and notice.WhichOneof("answer") is None
    # Sent after the notice, as by a caller that has not read it yet: still answered.
    late = await session.send("gpt-image-1", prompt="a badger")
    await eventually(lambda: len(harness.openai.requests) == 2)
    harness.openai.release()
    await session.call.done_writing()
    answers = await session.rest()

    assert sorted((answer.call_id, answer.WhichOneof("answer")) for answer in answers) == [
        (in_flight, "response"), (late, "response")]
    assert await session.call.code() == grpc.StatusCode.OK
    await stopping
    assert time.monotonic() - started < GRACE_SECONDS
    assert await logged_outcomes(rpc_log, in_flight, late) == {in_flight: "OK", late: "OK"}
    # A new stream over the same channel reaches the provider_svc that took over.
    again = Session(harness.stub)
    await again.send("gpt-image-1", prompt="a stoat")
    [answer] = (await again.final_answers(1)).values()
    assert answer.HasField("response")
    assert [request.json()["prompt"] for request in harness.openai.requests] == ["a fox", "a badger", "a stoat"]
    assert [record.getMessage() for record in rpc_log.records if record.name.startswith("grpc")] == []
