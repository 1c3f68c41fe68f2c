"""The edge's GenerateStream client against the fake provider on a real gRPC server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from quantized.common.v1 import images_pb2 as common_pb2
from quantized.provider.v1 import provider_pb2, provider_pb2_grpc
from quantized_runtime.call_stream import StreamBroken
from quantized_runtime.channels import open_channel
from quantized_runtime.errors import Reason, ServiceError

from edge.generate_client import GenerateClient
from provider_svc.servicer import CHUNK_BYTES
from tests.edge.fakes import Peers, flagged_image, image, start_fake_peers
from tests.polling import eventually

TIMEOUT = 5.0
# Long enough that a stop which waited it out would show.
GRACE_SECONDS = 30.0


@pytest.fixture
async def client(peers: Peers) -> AsyncIterator[GenerateClient]:
    channel = open_channel(peers.address)
    generate = GenerateClient(provider_pb2_grpc.ProviderServiceStub(channel))
    try:
        yield generate
    finally:
        await generate.close()
        await channel.close()


def request(prompt: str = "a hedgehog", provider: str = "openai", n: int = 1) -> provider_pb2.GenerateRequest:
    return provider_pb2.GenerateRequest(provider=provider, model_id="dall-e-3", request_id=f"req_{prompt}",
                                        params=common_pb2.GenerationParams(prompt=prompt, n=n))


async def never_answer(request: Any) -> Any:
    await asyncio.sleep(3600)


async def test_concurrent_calls_share_one_stream_and_each_gets_its_own_answer(
        peers: Peers, client: GenerateClient) -> None:
    prompts = [f"prompt {index}" for index in range(20)]

    responses = await asyncio.gather(*(client.generate(request(prompt, n=1 + index % 3), TIMEOUT)
                                       for index, prompt in enumerate(prompts)))

    for index, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        assert [entry.revised_prompt for entry in response.images] == [f"revised: {prompt}"] * (1 + index % 3)
    assert peers.provider.streams_opened == 1
    assert sorted(call.request_id for call in peers.provider.calls) == sorted(f"req_{p}" for p in prompts)
    assert all(0 < remaining <= TIMEOUT for remaining in peers.provider.time_remaining)


async def test_a_chunked_image_is_put_back_together(peers: Peers, client: GenerateClient) -> None:
    big = bytes(range(256)) * (5 * 4096 + 17)  # a little over 5 MiB: six chunks
    peers.provider.behaviour["openai"] = provider_pb2.GenerateResponse(
        created=7, images=[image(b"small"), image(big), flagged_image(), image(big[::-1])])

    response = await client.generate(request(), TIMEOUT)

    assert len(big) > 5 * CHUNK_BYTES
    assert [entry.image_data for entry in response.images] == [b"small", big, b"", big[::-1]]
    assert response.images[2].flagged and response.created == 7


async def test_an_error_answer_raises_its_service_error(peers: Peers, client: GenerateClient) -> None:
    peers.provider.behaviour["bedrock"] = ServiceError(Reason.UPSTREAM_REJECTED, "bad size", field="size")

    with pytest.raises(ServiceError) as raised:
        await client.generate(request(provider="bedrock"), TIMEOUT)

    assert (raised.value.reason, raised.value.message, raised.value.field) == (
        Reason.UPSTREAM_REJECTED, "bad size", "size")
    assert (await client.generate(request(), TIMEOUT)).images


async def test_a_call_that_times_out_is_cancelled_at_the_provider(peers: Peers, client: GenerateClient) -> None:
    peers.provider.behaviour["bedrock"] = never_answer

    with pytest.raises(ServiceError) as raised:
        await client.generate(request(provider="bedrock"), 0.2)

    assert raised.value.reason is Reason.SERVICE_UNAVAILABLE and "did not answer" in raised.value.message
    await eventually(lambda: len(peers.provider.cancelled) == 1)
    assert (await client.generate(request(), TIMEOUT)).images
    assert peers.provider.streams_opened == 1


async def test_a_cancelled_caller_cancels_its_call_at_the_provider(peers: Peers, client: GenerateClient) -> None:
    peers.provider.behaviour["bedrock"] = never_answer
    caller = asyncio.get_running_loop().create_task(client.generate(request(provider="bedrock"), TIMEOUT))
    await eventually(lambda: len(peers.provider.calls) == 1)

    caller.cancel()

    await eventually(lambda: len(peers.provider.cancelled) == 1)
    assert caller.cancelled()


async def test_a_broken_stream_fails_the_calls_in_flight_and_the_next_call_reopens_it(
        peers: Peers, client: GenerateClient) -> None:
    peers.provider.behaviour["bedrock"] = never_answer
    waiting = asyncio.get_running_loop().create_task(client.generate(request(provider="bedrock"), TIMEOUT))
    await eventually(lambda: len(peers.provider.calls) == 1)
    peers.provider.stream_abort_after_calls = 1

    results = await asyncio.gather(waiting, client.generate(request(), TIMEOUT), return_exceptions=True)

    for result in results:
        assert isinstance(result, StreamBroken) and result.reason is Reason.SERVICE_UNAVAILABLE
        assert "UNAVAILABLE" in result.message
    assert (await client.generate(request("after"), TIMEOUT)).images[0].revised_prompt == "revised: after"
    assert peers.provider.streams_opened == 2


async def test_a_closed_client_refuses_new_calls(client: GenerateClient) -> None:
    await client.close()
    with pytest.raises(ServiceError) as raised:
        await client.generate(request(), TIMEOUT)
    assert raised.value.reason is Reason.SERVICE_UNAVAILABLE


@pytest.mark.parametrize("successor", [True, False], ids=["another provider_svc takes over", "none left"])
async def test_calls_sent_as_provider_svc_stops_are_answered_there_and_later_ones_go_on_a_new_stream(
        peers: Peers, client: GenerateClient, successor: bool) -> None:
    gate = asyncio.Event()

    async def held(request: Any) -> None:
        await gate.wait()  # then the default answer

    peers.provider.behaviour["bedrock"] = held
    loop = asyncio.get_running_loop()
    in_flight = [loop.create_task(client.generate(request(f"in flight {index}", "bedrock"), TIMEOUT))
                 for index in range(2)]
    await eventually(lambda: len(peers.provider.calls) == 2)
    # A second provider_svc on the same port: new connections reach it once the first stops listening.
    taking_over = await start_fake_peers(peers.address) if successor else None
    started = time.monotonic()
    stopping = loop.create_task(peers.server.stop(GRACE_SECONDS))
    try:
        # The edge heard that provider_svc is stopping and closed its side of the stream.
        await eventually(lambda: peers.provider.streams_closed == 1)
        [outcome] = await asyncio.gather(client.generate(request("after"), TIMEOUT), return_exceptions=True)
        gate.set()

        answers = await asyncio.gather(*in_flight)
        await stopping
        assert [answer.images[0].revised_prompt for answer in answers] == ["revised: in flight 0",
                                                                           "revised: in flight 1"]
        assert time.monotonic() - started < GRACE_SECONDS
        assert [call.params.prompt for call in peers.provider.calls] == ["in flight 0", "in flight 1"]
        if taking_over is not None:
            assert outcome.images[0].revised_prompt == "revised: after"
            assert [call.params.prompt for call in taking_over.provider.calls] == ["after"]
        else:
            assert isinstance(outcome, ServiceError) and outcome.reason is Reason.SERVICE_UNAVAILABLE
            assert outcome.message.startswith("generate stream to provider_svc failed")
    finally:
        if taking_over is not None:
            await taking_over.server.stop(None)


async def test_a_stream_that_provider_svc_drains_at_once_still_answers_what_was_sent(
        peers: Peers, client: GenerateClient) -> None:
    # Every stream is told at once, as by a provider_svc that is stopping.
    peers.drain.drain()

    assert (await client.generate(request("first"), TIMEOUT)).images
    await eventually(lambda: peers.provider.streams_closed == 1)
    assert (await client.generate(request("second"), TIMEOUT)).images

    assert [call.params.prompt for call in peers.provider.calls] == ["first", "second"]
    assert peers.provider.streams_opened == 2
    await eventually(lambda: peers.provider.streams_closed == 2)


async def test_no_call_is_lost_or_made_twice_when_provider_svc_stops_under_load(
        peers: Peers, client: GenerateClient) -> None:
    """Writes race the stop: with grpc.aio a write that meets the end of its
    stream turns the stream's status into INTERNAL (grpc/grpc#36066), which is
    why provider_svc never ends a stream the edge may still write to."""
    # The stream opens on the first provider_svc before a second one shares its port.
    await client.generate(request("opens"), TIMEOUT)
    taking_over = await start_fake_peers(peers.address)
    prompts = [f"prompt {index}" for index in range(300)]
    loop = asyncio.get_running_loop()
    try:
        calls = []
        for index, prompt in enumerate(prompts):
            calls.append(loop.create_task(client.generate(request(prompt), TIMEOUT)))
            if index == 100:
                stopping = loop.create_task(peers.server.stop(GRACE_SECONDS))
            await asyncio.sleep(0.0005)
        answers = await asyncio.gather(*calls)
        await stopping

        assert [answer.images[0].revised_prompt for answer in answers] == [f"revised: {p}" for p in prompts]
        first = [call.params.prompt for call in peers.provider.calls]
        second = [call.params.prompt for call in taking_over.provider.calls]
        assert len(first) > 1 and second
        assert sorted(first + second) == sorted(["opens", *prompts])
    finally:
        await taking_over.server.stop(None)
