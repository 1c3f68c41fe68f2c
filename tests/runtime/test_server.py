"""The runtime's server bootstrap: health, reflection, error translation, shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from quantized.images.v1 import images_pb2, images_pb2_grpc
from quantized_runtime.channels import channel_options
from quantized_runtime.client import call
from quantized_runtime.errors import Reason, ServiceError
from quantized_runtime.grpc_errors import from_rpc_error
from quantized_runtime.request_context import current_request_id
from quantized_runtime.server import create_server
from tests.harness import serving

IMAGES_SERVICE = images_pb2.DESCRIPTOR.services_by_name["ImagesService"].full_name


class ScriptedImages(images_pb2_grpc.ImagesServiceServicer):
    def __init__(self, failure: Exception | None) -> None:
        self.failure = failure

    async def Generate(self, request, context):
        if self.failure is not None:
            raise self.failure
        return images_pb2.GenerateResponse(created=7)


async def _start(failure: Exception | None = None, **options):
    servicer = ScriptedImages(failure)
    return await create_server(
        "127.0.0.1:0",
        [lambda server: images_pb2_grpc.add_ImagesServiceServicer_to_server(servicer, server)],
        [IMAGES_SERVICE],
        max_message_bytes=4 * 1024 * 1024,
        **options,
    )


async def test_health_reports_serving_for_the_server_and_each_service():
    async with serving(_start()) as served:
        health = health_pb2_grpc.HealthStub(served.channel)
        for service in ("", IMAGES_SERVICE):
            reply = await call(health.Check, health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_stop_turns_health_not_serving_before_closing():
    running = await _start()
    await running.health.set("", health_pb2.HealthCheckResponse.SERVING)
    await running.stop(0)
    reply = await running.health.Check(health_pb2.HealthCheckRequest(service=""), None)
    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_reflection_is_off_unless_asked_for():
    async with serving(_start()) as served:
        reflection_stub = reflection_pb2_grpc.ServerReflectionStub(served.channel)
        replies = reflection_stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in replies:
                pass
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_reflection_lists_the_service_health_and_reflection():
    async def start():
        return await _start(reflection_enabled=True)

    loop = asyncio.new_event_loop()
    running = loop.run_until_complete(start())
    try:
        # The reflection client is synchronous; run it while the aio server's loop is driven
        # from a helper thread.
        import threading

        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            database = ProtoReflectionDescriptorDatabase(channel)
            services = set(database.get_services())
            pool = descriptor_pool.DescriptorPool(database)
            method = pool.FindServiceByName(IMAGES_SERVICE).FindMethodByName("Generate")
        assert {IMAGES_SERVICE, "grpc.health.v1.Health",
                "grpc.reflection.v1alpha.ServerReflection"} <= services
        assert method.input_type.full_name == "quantized.images.v1.GenerateRequest"
    finally:
        asyncio.run_coroutine_threadsafe(running.stop(0), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.mark.parametrize(("reason", "code"), [(Reason.UPSTREAM_REJECTED, grpc.StatusCode.INVALID_ARGUMENT),
                                              (Reason.UPSTREAM_UNAVAILABLE, grpc.StatusCode.UNAVAILABLE)])
async def test_service_error_travels_as_status_with_reason_and_field(reason: Reason, code: grpc.StatusCode):
    async with serving(_start(ServiceError(reason, "size is not supported", field="size"))) as served:
        # Read off the wire, not through `call`: the status code is under test too.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await images_pb2_grpc.ImagesServiceStub(served.channel).Generate(
                images_pb2.GenerateRequest(), timeout=5)
    assert caught.value.code() == code
    error = from_rpc_error(caught.value)
    assert (error.reason, error.message, error.field) == (reason, "size is not supported", "size")


async def test_unexpected_exception_becomes_generic_internal_without_details():
    async with serving(_start(RuntimeError("database password is hunter2"))) as served:
        # Read off the wire, not through `call`: the status and its details are under test.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await images_pb2_grpc.ImagesServiceStub(served.channel).Generate(
                images_pb2.GenerateRequest(), timeout=5,
                metadata=[("x-request-id", "req_test123")])
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "hunter2" not in (caught.value.details() or "")
    error = from_rpc_error(caught.value)
    assert error.reason == Reason.INTERNAL
    assert "req_test123" in error.message


async def test_sigterm_lets_the_in_flight_call_finish():
    script = Path(__file__).with_name("slow_server.py")
    process = subprocess.Popen([sys.executable, str(script), "1.5"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        port = int(process.stdout.readline())
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = images_pb2_grpc.ImagesServiceStub(channel).Generate(
                images_pb2.GenerateRequest(), timeout=20)
            await asyncio.sleep(0.5)  # the call is now in flight on the server
            os.kill(process.pid, signal.SIGTERM)
            reply = await call
        assert reply.created == 42
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


async def _request_ids_seen(mint_request_ids: bool, forwarded: str, calls: int) -> list[str]:
    """The request id the servicer saw on each of `calls` calls that forwarded `forwarded`."""
    seen: list[str] = []

    class RecordingImages(images_pb2_grpc.ImagesServiceServicer):
        async def Generate(self, request, context):
            seen.append(current_request_id.get())
            return images_pb2.GenerateResponse()

    starting = create_server(
        "127.0.0.1:0",
        [lambda server: images_pb2_grpc.add_ImagesServiceServicer_to_server(RecordingImages(), server)],
        [IMAGES_SERVICE], max_message_bytes=4 * 1024 * 1024, mint_request_ids=mint_request_ids)
    async with serving(starting) as served:
        stub = images_pb2_grpc.ImagesServiceStub(served.channel)
        # `call` forwards the request id of the work in progress.
        current_request_id.set(forwarded)
        for _ in range(calls):
            await call(stub.Generate, images_pb2.GenerateRequest(), timeout=5)
    return seen


async def test_a_public_server_mints_its_own_request_id_for_every_call():
    seen = await _request_ids_seen(mint_request_ids=True, forwarded="req_callers_own", calls=2)
    assert len(set(seen)) == 2 and all(rid.startswith("req_") for rid in seen)
    assert "req_callers_own" not in seen


async def test_an_internal_server_keeps_the_forwarded_request_id():
    assert await _request_ids_seen(mint_request_ids=False, forwarded="req_forwarded", calls=1) == ["req_forwarded"]


async def _echo(request_iterator, context):
    async for message in request_iterator:
        yield message


async def test_an_idle_long_lived_stream_survives_keepalive_pings(monkeypatch):
    # Scaled down from 30 s: the client pings about every second (gRPC's floor) and,
    # unlike the default, keeps pinging without data; a server with gRPC's default
    # ping policy answers the fourth such ping with GOAWAY "too_many_pings".
    monkeypatch.setattr("quantized_runtime.channels.KEEPALIVE_TIME_MS", 300)
    echo = grpc.method_handlers_generic_handler(
        "test.Echo", {"Chat": grpc.stream_stream_rpc_method_handler(_echo)})
    running = await create_server("127.0.0.1:0", [lambda server: server.add_generic_rpc_handlers((echo,))],
                                  [], max_message_bytes=1024 * 1024)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}", options=[
        *channel_options(1024 * 1024), ("grpc.http2.max_pings_without_data", 0)])
    try:
        stream = channel.stream_stream("/test.Echo/Chat")()
        await stream.write(b"before")
        assert await stream.read() == b"before"
        await asyncio.sleep(8)
        await stream.write(b"after")
        assert await stream.read() == b"after"
        await stream.done_writing()
    finally:
        await channel.close()
        await running.stop(0)
