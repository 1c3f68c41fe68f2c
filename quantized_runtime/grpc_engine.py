"""Which of gRPC core's I/O engines the services use.

gRPC core reads GRPC_EXPERIMENTS once, when grpc is first imported. By default
its EventEngine does the socket I/O on threads of its own, and each message then
passes from that thread to grpc.aio's poller thread and on to the event loop.
With the EventEngine client and listener turned off, the poller thread does the
I/O itself: one hand-off fewer per message at each end, which lowers both the
latency and the CPU of every request on the full stack (figures:
docs/benchmarks.md).
"""

from __future__ import annotations

import os

GRPC_EXPERIMENTS = "GRPC_EXPERIMENTS"
PREFERRED_EXPERIMENTS = "-event_engine_client,-event_engine_listener"


def prefer_polling_engine() -> None:
    """Call before the first `import grpc` (the `quantized` command's and each
    service's package do); an operator's own GRPC_EXPERIMENTS wins."""
    os.environ.setdefault(GRPC_EXPERIMENTS, PREFERRED_EXPERIMENTS)
