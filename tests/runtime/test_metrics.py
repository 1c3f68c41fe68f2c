"""The shared metrics (quantized_runtime/metrics.py): the /metrics server on its
own address, and gRPC calls counted by method and code on both ends, and per
call on a long-lived stream."""

from __future__ import annotations

import asyncio
import logging
import socket

import httpx
import pytest
from prometheus_client import REGISTRY

from edge.settings import EdgeSettings
from quantized.images.v1 import images_pb2, images_pb2_grpc
from quantized.provider.v1 import provider_pb2, provider_pb2_grpc
from quantized_runtime.call_stream import CallStreamClient, CallStreamServer, fail_waiter
from quantized_runtime.client import call
from quantized_runtime.errors import Reason, ServiceError
from quantized_runtime.metrics import serve_metrics
from quantized_runtime.server import create_server
from quantized_runtime.settings import SettingsError, load_settings
from quantized_runtime.stream_drain import StreamDrain
from tests.harness import serving

IMAGES_SERVICE = images_pb2.DESCRIPTOR.services_by_name["ImagesService"].full_name
PROVIDER_SERVICE = provider_pb2.DESCRIPTOR.services_by_name["ProviderService"].full_name


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Images(images_pb2_grpc.ImagesServiceServicer):
    async def Generate(self, request, context):
        if request.model == "refuse":
            raise ServiceError(Reason.INSUFFICIENT_CREDITS, "no credits")
        return images_pb2.GenerateResponse(created=7)


async def _start_images():
    return await create_server(
        "127.0.0.1:0", [lambda server: images_pb2_grpc.add_ImagesServiceServicer_to_server(Images(), server)],
        [IMAGES_SERVICE], max_message_bytes=4 * 1024 * 1024)


def test_the_metrics_server_serves_the_registry_on_its_own_address() -> None:
    running = serve_metrics("127.0.0.1:0", "test")
    assert running is not None
    try:
        response = httpx.get(f"http://{running.address}/metrics", timeout=10)
        assert response.status_code == 200
        assert "grpc_server_handled_total" in response.text or "# HELP grpc_server_handled" in response.text
        assert "process_cpu_seconds_total" in response.text
    finally:
        running.close()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://{running.address}/metrics", timeout=2)


def test_an_empty_address_serves_no_metrics() -> None:
    assert serve_metrics("", "test") is None


def test_a_port_in_use_stops_the_start_naming_the_address() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(RuntimeError, match=f"edge: cannot serve metrics on {address}"):
            serve_metrics(address, "edge")


def test_a_malformed_metrics_address_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTIZED_EDGE_METRICS_LISTEN", "not-an-address")
    with pytest.raises(SettingsError, match="QUANTIZED_EDGE_METRICS_LISTEN"):
        load_settings(EdgeSettings)


async def test_unary_calls_are_counted_by_method_and_code_on_both_ends() -> None:
    method = {"grpc_service": IMAGES_SERVICE, "grpc_method": "Generate", "grpc_type": "unary"}
    before = {side: {code: sample(f"grpc_{side}_handled_total", **method, grpc_code=code)
                     for code in ("OK", "RESOURCE_EXHAUSTED")} for side in ("server", "client")}
    timed_before = sample("grpc_server_handling_seconds_count", **method)
    async with serving(_start_images()) as served:
        stub = images_pb2_grpc.ImagesServiceStub(served.channel)
        await call(stub.Generate, images_pb2.GenerateRequest(model="ok"), timeout=5)
        await call(stub.Generate, images_pb2.GenerateRequest(model="ok"), timeout=5)
        with pytest.raises(ServiceError):
            await call(stub.Generate, images_pb2.GenerateRequest(model="refuse"), timeout=5)
    for side in ("server", "client"):
        counted = {code: sample(f"grpc_{side}_handled_total", **method, grpc_code=code) - before[side][code]
                   for code in before[side]}
        assert counted == {"OK": 2, "RESOURCE_EXHAUSTED": 1}, side
    assert sample("grpc_server_handling_seconds_count", **method) - timed_before == 3


class EchoStream(provider_pb2_grpc.ProviderServiceServicer):
    """Answers each call on GenerateStream at once."""

    def __init__(self) -> None:
        self.drain = StreamDrain()

    async def GenerateStream(self, request_iterator, context):
        stream = CallStreamServer(context, self.drain, provider_pb2.GenerateStreamResponse(draining=True))

        async def answer(message):
            await stream.write(provider_pb2.GenerateStreamResponse(
                call_id=message.call_id, response=provider_pb2.GenerateResponse(created=1)))

        async def on_message(message):
            if not message.cancel and message.request.model_id != "never":
                stream.start(answer(message))

        await stream.serve(request_iterator, on_message)


class Client(CallStreamClient):
    """The smallest stream client: a call's answer is its response."""

    def __init__(self, stub) -> None:
        super().__init__(stub.GenerateStream, stream="generate stream", peer="test",
                         logger=logging.getLogger("tests.stream_client"))

    async def generate(self, model_id: str, timeout: float):
        call_id = self._new_call_id()
        waiter = asyncio.get_running_loop().create_future()
        self._start(call_id, waiter, provider_pb2.GenerateStreamRequest(
            call_id=call_id, request=provider_pb2.GenerateRequest(model_id=model_id)))
        return await self._wait(waiter, timeout, give_up=lambda: self._abandon(call_id))

    def _call_id(self, answer):
        return answer.call_id

    def _answered(self, waiter, answer):
        if not waiter.done():
            waiter.set_result(answer.response)
        return True

    def _failed(self, waiter, failure):
        fail_waiter(waiter, failure)


async def test_each_call_on_a_long_lived_stream_is_counted_and_the_stream_once() -> None:
    """The per-RPC count sees one stream; the stream client counts each call on it."""
    stream_method = {"grpc_service": PROVIDER_SERVICE, "grpc_method": "GenerateStream"}
    before = {outcome: sample("quantized_stream_client_calls_total", **stream_method, outcome=outcome)
              for outcome in ("answered", "abandoned", "broken")}
    streams_before = sample("grpc_server_started_total", **stream_method, grpc_type="bidi_stream")
    servicer = EchoStream()
    starting = create_server(
        "127.0.0.1:0", [lambda server: provider_pb2_grpc.add_ProviderServiceServicer_to_server(servicer, server)],
        [PROVIDER_SERVICE], max_message_bytes=4 * 1024 * 1024)
    async with serving(starting) as served:
        client = Client(provider_pb2_grpc.ProviderServiceStub(served.channel))
        for _ in range(3):
            await client.generate("answered", timeout=5)
        with pytest.raises(ServiceError):
            await client.generate("never", timeout=0.2)
        await client.close()
    counted = {outcome: sample("quantized_stream_client_calls_total", **stream_method, outcome=outcome)
               - before[outcome] for outcome in before}
    assert counted == {"answered": 3, "abandoned": 1, "broken": 0}
    assert sample("grpc_server_started_total", **stream_method, grpc_type="bidi_stream") - streams_before == 1
