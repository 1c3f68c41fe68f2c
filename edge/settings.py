"""Edge configuration, read from QUANTIZED_EDGE_* (peer addresses use the shared names)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from quantized_runtime import defaults
from quantized_runtime.settings import ServiceSettings


class EdgeSettings(ServiceSettings):
    # populate_by_name: callers (tests, the CLI) may pass field names instead of env names.
    model_config = SettingsConfigDict(extra="ignore", env_prefix="QUANTIZED_EDGE_", populate_by_name=True)

    host: str = "127.0.0.1"
    port: int = Field(default=defaults.EDGE_HTTP_PORT, ge=0, le=65535)
    # The public gRPC ImagesService address.
    listen: str = Field(default=defaults.EDGE_GRPC_ADDR, validation_alias="QUANTIZED_EDGE_GRPC_LISTEN")
    metrics_listen: str = defaults.EDGE_METRICS_ADDR

    catalog_addr: str = Field(default=defaults.CATALOG_ADDR, validation_alias="QUANTIZED_CATALOG_ADDR")
    billing_addr: str = Field(default=defaults.BILLING_ADDR, validation_alias="QUANTIZED_BILLING_ADDR")
    provider_addr: str = Field(default=defaults.PROVIDER_ADDR, validation_alias="QUANTIZED_PROVIDER_ADDR")

    # Whole-request budget; every internal call gets what is left of it.
    request_timeout_seconds: float = Field(default=180.0, gt=0)
    # Ceiling for one catalog or billing call (the provider call may use the whole budget).
    internal_rpc_timeout_seconds: float = Field(default=5.0, gt=0)
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)

    # How long a successful authentication is reused (a revoked key stops working within it).
    auth_cache_ttl_seconds: float = Field(default=10.0, ge=0, le=30)
    # How long routes, quotes and the model list are reused (catalog changes show within it).
    catalog_cache_ttl_seconds: float = Field(default=2.0, ge=0, le=5)
    # Entries kept per cache before the oldest are dropped.
    cache_max_entries: int = Field(default=10_000, gt=0)

    # Credit leases (edge/leases.py). False: an exact hold at billing for every
    # request, as before leases (kept to compare the two in benchmarks).
    credit_leases: bool = True
    # The smallest lease worth having, in worst-case quotes of the request asking;
    # below it the account falls back to exact holds.
    lease_min_quotes: int = Field(default=4, ge=1)
    # A lease is sized for this long of the account's recent spend through this edge.
    lease_target_seconds: float = Field(default=2.0, gt=0)
    # A lease unused this long, with nothing in flight on it, is returned to billing.
    lease_idle_seconds: float = Field(default=5.0, gt=0)
    # After billing refused a lease for want of credits, the account uses exact holds this long.
    lease_fallback_seconds: float = Field(default=1.0, ge=0)

    # How long billing or provider_svc may fail its health checks before the edge
    # reports itself not ready (gRPC health NOT_SERVING, GET /readyz 503).
    peer_down_grace_seconds: float = Field(default=3.0, ge=0)

    # How long a token billing refused is refused again without asking billing.
    auth_failure_cache_ttl_seconds: float = Field(default=5.0, ge=0, le=60)
    # Refused tokens one client address may send per minute before the edge
    # stops asking billing about its unknown tokens (0: no limit).
    auth_failures_per_minute_per_address: int = Field(default=30, ge=0)

    # Idempotency-Key (docs/api.md, "Idempotency"): answers larger than this
    # (serialized, images included) are not stored, and their replay is a 409.
    idempotency_max_stored_bytes: int = Field(default=8 * 1024 * 1024, gt=0, le=64 * 1024 * 1024)

    # Rate-limit counters and idempotency keys shared by every edge replica.
    # Unset: each edge counts alone, and idempotency keys live in billing's database.
    redis_url: SecretStr | None = None
    # When Redis cannot be reached: `local` counts in this edge's memory meanwhile,
    # `refuse` answers 503 until it is back.
    redis_unavailable_policy: Literal["local", "refuse"] = "local"
    # One Redis command's timeout; a slower Redis counts as unavailable.
    redis_timeout_seconds: float = Field(default=0.25, gt=0, le=5)
    # After a Redis failure, how long the edge waits before trying Redis again.
    redis_retry_seconds: float = Field(default=1.0, ge=0)
