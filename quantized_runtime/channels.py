"""One long-lived grpc.aio channel per peer, sized for multi-megabyte images,
balanced round robin over every address of the peer, over mutual TLS when the
caller has a certificate (quantized_runtime.tls)."""

from __future__ import annotations

import ipaddress
import json
import logging

import grpc

from quantized_runtime.tls import TlsFiles, channel_credentials, server_name

log = logging.getLogger("quantized.channels")

DEFAULT_MAX_MESSAGE_BYTES = 128 * 1024 * 1024
# Clients ping a connection with calls open every KEEPALIVE_TIME_MS. A server must
# accept pings that often even while a long-lived stream (Ledger, GenerateStream)
# carries no data; by default it allows one per 5 minutes and then answers
# GOAWAY "too_many_pings", dropping the connection and its streams.
KEEPALIVE_TIME_MS = 30_000
RECONNECT_BACKOFF_MS = 100
MAX_RECONNECT_BACKOFF_MS = 1_000
# Each call (and each long-lived stream, when it opens) goes to the next ready
# address of the peer, so replicas share the load and a dead one is skipped.
ROUND_ROBIN_SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})
# A `dns:` peer (a Kubernetes headless Service) is resolved again when a
# connection fails, at most this often (gRPC's default is 30 s).
DNS_MIN_RERESOLUTION_MS = 5_000


def channel_options(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # Large HTTP/2 frames: a 30 MB image crosses in far fewer frames (measured
        # 89 ms -> 49 ms for one 30 MB reply on loopback).
        ("grpc.http2.max_frame_size", 16 * 1024 * 1024 - 1),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", 10_000),
        # A peer that restarts (a supervisor's restart, a rolling deploy) is back
        # within a second or two; gRPC's default backoff (1 s doubling to 120 s)
        # would keep refusing calls long after it returned.
        ("grpc.initial_reconnect_backoff_ms", RECONNECT_BACKOFF_MS),
        ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
    ]


def server_options(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                   max_receive_message_bytes: int | None = None) -> list[tuple[str, int]]:
    """A server's options; `max_receive_message_bytes` caps what callers may send
    (default: the same as what the server may send)."""
    receive_limit = max_message_bytes if max_receive_message_bytes is None else max_receive_message_bytes
    options = [(key, receive_limit if key == "grpc.max_receive_message_length" else value)
               for key, value in channel_options(max_message_bytes)]
    return [*options, ("grpc.http2.min_ping_interval_without_data_ms", KEEPALIVE_TIME_MS // 2)]


def grpc_target(address: str) -> str:
    """A peer address setting as a gRPC target. `host:port` and any target with a
    scheme (`dns:///billing:50052`: every address the name resolves to, as a
    Kubernetes headless Service answers) pass through; a comma-separated list of
    IP:port (`127.0.0.1:50052,127.0.0.1:50062`) becomes an `ipv4:` or `ipv6:` target."""
    if "," not in address or address.startswith(("ipv4:", "ipv6:")):
        return address
    parts = [part.strip() for part in address.split(",")]
    try:
        versions = {ipaddress.ip_address(part.rsplit(":", 1)[0].strip("[]")).version for part in parts}
    except ValueError:
        versions = set()
    if len(versions) != 1:
        raise ValueError(f"a list of peer addresses must be IP:port pairs of one IP version: {address!r}")
    return f"{'ipv6' if versions == {6} else 'ipv4'}:{','.join(parts)}"


def open_channel(address: str, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, *,
                 tls: TlsFiles | None = None, peer: str | None = None) -> grpc.aio.Channel:
    """Open a channel on the running event loop (call it from a lifespan, not at import),
    balanced round robin over the addresses `address` names (see `grpc_target`).

    With `tls`, the channel presents this process's certificate and accepts only a
    server whose certificate names `peer` (`billing` -> billing.quantized.internal),
    whatever address it dials."""
    options = [
        *channel_options(max_message_bytes),
        ("grpc.service_config", ROUND_ROBIN_SERVICE_CONFIG),
        ("grpc.dns_min_time_between_resolutions_ms", DNS_MIN_RERESOLUTION_MS),
    ]
    target = grpc_target(address)
    if tls is None:
        if not is_loopback(address):
            log.warning("calling a peer without mutual TLS across the network",
                        extra={"fields": {"address": address, "peer": peer or "-"}})
        return grpc.aio.insecure_channel(target, options=options)
    if peer is None:
        raise ValueError("a TLS channel needs the name of the service it calls")
    return grpc.aio.secure_channel(target, channel_credentials(tls),
                                   options=[*options, ("grpc.ssl_target_name_override", server_name(peer))])


def is_loopback(address: str) -> bool:
    """Whether an address setting (`host:port`, or a comma-separated list of them,
    as given to a server or a channel) stays on this machine."""
    return all(_is_loopback_host(part.strip().rsplit(":", 1)[0].strip("[]"))
               for part in address.removeprefix("ipv4:").removeprefix("ipv6:").split(","))


def _is_loopback_host(host: str) -> bool:
    if host.startswith(("unix:", "unix-abstract:")) or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
