"""Default loopback addresses and paths, shared so that a service, its peers and the
CLI agree without importing one another."""

from __future__ import annotations

import os
from pathlib import Path

EDGE_HTTP_PORT = 8080
EDGE_GRPC_ADDR = "127.0.0.1:50050"
CATALOG_ADDR = "127.0.0.1:50051"
BILLING_ADDR = "127.0.0.1:50052"
PROVIDER_ADDR = "127.0.0.1:50053"
# Each service's Prometheus /metrics, on loopback unless configured otherwise.
EDGE_METRICS_ADDR = "127.0.0.1:9460"
CATALOG_METRICS_ADDR = "127.0.0.1:9461"
BILLING_METRICS_ADDR = "127.0.0.1:9462"
PROVIDER_METRICS_ADDR = "127.0.0.1:9463"


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "quantized"


def sqlite_url(data_dir: Path | str, name: str) -> str:
    return f"sqlite+aiosqlite:///{Path(data_dir) / name}"


def database_url_or_embedded(configured: str | None, data_dir: Path, file_name: str) -> str:
    """The configured database URL, or the embedded SQLite file in the data
    directory (created if need be): catalog's and billing's one rule."""
    if configured:
        return configured
    data_dir.mkdir(parents=True, exist_ok=True)
    return sqlite_url(data_dir, file_name)
