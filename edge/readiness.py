"""The edge's readiness: it can serve only while billing and provider_svc answer.

Each peer is probed on its own long-lived channel with the standard gRPC health
check of the service the edge calls there, so a peer that is unreachable and a
peer that reports NOT_SERVING (billing without its database) count alike. A peer
that keeps failing for longer than the grace period (`peer_down_grace_seconds`)
is down: a restart under a supervisor or a rolling deploy, gone for a second or
two, does not take the edge out of rotation. A newly started edge is not ready
until both have answered once. The catalog is not watched: its
routes and quotes are cached, and a cold request without it is answered 503
`service_unavailable` like any other peer outage.

The same watch drives the edge's gRPC health and `GET /readyz`; `GET /healthz`
is liveness only.
"""

from __future__ import annotations

import json

from quantized.billing.v1 import billing_pb2
from quantized.provider.v1 import provider_pb2
from quantized_runtime.health import Dependency, DependencyWatch, grpc_health_probe

from edge.peers import Peers

BILLING = "billing"
PROVIDER = "provider"
PEERS_THE_EDGE_NEEDS = (BILLING, PROVIDER)

BILLING_SERVICE_NAME = billing_pb2.DESCRIPTOR.services_by_name["BillingService"].full_name
PROVIDER_SERVICE_NAME = provider_pb2.DESCRIPTOR.services_by_name["ProviderService"].full_name

LIVE_BODY = json.dumps({"status": "ok"}).encode()


def peer_watch(peers: Peers, grace_seconds: float) -> DependencyWatch:
    # Not ready until both have answered once: an edge started before its peers (or
    # while one is away) reports SERVING only when it can serve, and its channels
    # are connected by then.
    return DependencyWatch([
        Dependency(BILLING, grpc_health_probe(peers.billing_channel, BILLING_SERVICE_NAME),
                   grace_seconds),
        Dependency(PROVIDER, grpc_health_probe(peers.provider_channel, PROVIDER_SERVICE_NAME),
                   grace_seconds),
    ], down_until_seen=True)


def readiness_answer(watch: DependencyWatch) -> tuple[int, bytes]:
    """`GET /readyz`: 200 while no peer the edge needs is down, else 503 naming them."""
    down = sorted(watch.down)
    return (503 if down else 200), json.dumps({"ready": not down, "unavailable": down}).encode()
