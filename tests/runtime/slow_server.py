"""A process running a runtime-bootstrapped server whose one RPC takes a while.

Used by the graceful-shutdown test: it prints its port, serves until SIGTERM, and
must let the in-flight call finish before it exits.
"""

import asyncio
import sys

from quantized.images.v1 import images_pb2, images_pb2_grpc
from quantized_runtime.server import create_server, serve_until_signal

CALL_SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 1.5


class SlowImages(images_pb2_grpc.ImagesServiceServicer):
    async def Generate(self, request, context):
        await asyncio.sleep(CALL_SECONDS)
        return images_pb2.GenerateResponse(created=42)


async def main() -> None:
    running = await create_server(
        "127.0.0.1:0",
        [lambda server: images_pb2_grpc.add_ImagesServiceServicer_to_server(SlowImages(), server)],
        [images_pb2.DESCRIPTOR.services_by_name["ImagesService"].full_name],
        max_message_bytes=4 * 1024 * 1024,
    )
    print(running.port, flush=True)
    await serve_until_signal(running, grace_seconds=10.0, name="slow")


asyncio.run(main())
