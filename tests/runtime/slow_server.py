"""A process running a runtime-bootstrapped server whose one RPC takes a while.

Used by the graceful-shutdown test: it prints its port, serves until SIGTERM, and
must let the in-flight call finish before it exits.
"""

import asyncio
import sys

from quantized.provider.v1 import provider_pb2, provider_pb2_grpc
from quantized_runtime.server import create_server, serve_until_signal

CALL_SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 1.5


class SlowProvider(provider_pb2_grpc.ProviderServiceServicer):
    async def Generate(self, request, context):
        await asyncio.sleep(CALL_SECONDS)
        return provider_pb2.GenerateResponse(created=42)


async def main() -> None:
    running = await create_server(
        "127.0.0.1:0",
        [lambda server: provider_pb2_grpc.add_ProviderServiceServicer_to_server(SlowProvider(), server)],
        [provider_pb2.DESCRIPTOR.services_by_name["ProviderService"].full_name],
        max_message_bytes=4 * 1024 * 1024,
    )
    print(running.port, flush=True)
    await serve_until_signal(running, grace_seconds=10.0, name="slow")


asyncio.run(main())
