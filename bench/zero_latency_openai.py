"""A zero-latency stand-in for the OpenAI Images API, for benchmarks only.

Raw asyncio so that it costs next to nothing per request: every POST gets a
prebuilt gpt-image-1 style answer (a small PNG and token usage); a body whose
prompt contains BIG gets an answer carrying an image of --big-bytes.
Run: python bench/zero_latency_openai.py PORT [--big-bytes N]; prints "ready".
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os

from PIL import Image


def _png(side: int, random_pixels: bool) -> bytes:
    if random_pixels:
        image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    else:
        image = Image.new("RGB", (side, side), (90, 140, 200))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=0 if random_pixels else 6)
    return buffer.getvalue()


def _answer(image: bytes) -> bytes:
    body = json.dumps({
        "created": 1776443191, "background": "opaque", "output_format": "png", "quality": "low",
        "size": "1024x1024", "data": [{"b64_json": base64.b64encode(image).decode()}],
        "usage": {"input_tokens": 12, "input_tokens_details": {"image_tokens": 0, "text_tokens": 12},
                  "output_tokens": 272, "total_tokens": 284},
    }).encode()
    head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "x-request-id: req_bench\r\n\r\n").encode()
    return head + body


async def main(port: int, big_bytes: int) -> None:
    small = _answer(_png(64, random_pixels=False))
    big = _answer(_png(int((big_bytes / 3) ** 0.5), random_pixels=True)) if big_bytes else small

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                body = await reader.readexactly(length)
                writer.write(big if b"BIG" in body else small)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, limit=64 * 1024 * 1024)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--big-bytes", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(main(args.port, args.big_bytes))
