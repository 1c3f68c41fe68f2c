"""Billing configuration, read from the environment (see docs/billing.md)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from billing_svc.domain import RateLimits
from billing_svc.storage.engine import database_url_problem
from quantized_runtime import defaults
from quantized_runtime.admin_auth import admin_token_problem
from quantized_runtime.settings import InternalServiceSettings

# The edge gives a request at most 180 s upstream; a hold must outlive that with
# a margin for retries and settlement, or a slow but successful request would
# find its hold reaped.
DEFAULT_HOLD_TTL_SECONDS = 480.0
MIN_HMAC_SECRET_BYTES = 32
# An edge renews its lease in the background well before this; a crashed edge's
# unspent credits come back within it (plus a reaper interval).
DEFAULT_LEASE_TTL_SECONDS = 30.0


class BillingSettings(InternalServiceSettings):
    model_config = SettingsConfigDict(env_prefix="QUANTIZED_BILLING_", validate_by_name=True,
                                      extra="ignore")

    listen: str = defaults.BILLING_ADDR
    metrics_listen: str = defaults.BILLING_METRICS_ADDR
    data_dir: Path = Field(default_factory=defaults.default_data_dir,
                           validation_alias="QUANTIZED_DATA_DIR")
    # Unset: an SQLite file `billing.db` in the data directory. Otherwise a SQLite
    # file or PostgreSQL (anything else is refused here, at start).
    database_url: str | None = None
    # Required, but checked by `main.start` so that the error names the variable
    # whichever way the settings were built.
    admin_token: SecretStr | None = Field(default=None, validation_alias="QUANTIZED_ADMIN_TOKEN")
    jwt_secret: SecretStr | None = Field(
        default=None, validation_alias="QUANTIZED_JWT_SECRET")
    jwt_jwks_file: Path | None = Field(
        default=None, validation_alias="QUANTIZED_JWT_JWKS_FILE")
    jwt_issuer: str | None = Field(
        default=None, validation_alias="QUANTIZED_JWT_ISSUER")
    jwt_audience: str | None = Field(
        default=None, validation_alias="QUANTIZED_JWT_AUDIENCE")
    jwt_leeway_seconds: float = Field(
        default=30.0, ge=0, le=300,
        validation_alias="QUANTIZED_JWT_LEEWAY_SECONDS")
    hold_ttl_seconds: float = Field(default=DEFAULT_HOLD_TTL_SECONDS, gt=0)
    reaper_interval_seconds: float = Field(default=30.0, gt=0)
    # The most of an account's available balance one lease may take. A decimal,
    # so the share of a balance is computed exactly.
    lease_share: Decimal = Field(default=Decimal("0.5"), gt=0, le=1)
    lease_ttl_seconds: float = Field(default=DEFAULT_LEASE_TTL_SECONDS, gt=0)
    database_pool_size: int = Field(default=10, ge=1, le=100)
    # Rate limits for keys and accounts that store none (0: no limit). A key's
    # and its account's both apply; a JWT caller has only its account's.
    default_key_requests_per_minute: int = Field(default=6000, ge=0)
    default_key_max_concurrent_requests: int = Field(default=64, ge=0)
    default_account_requests_per_minute: int = Field(default=12000, ge=0)
    default_account_max_concurrent_requests: int = Field(default=128, ge=0)
    # JWT lifetime policy: `exp - iat` may not exceed this; 0 accepts any
    # lifetime (and tokens without `iat`).
    jwt_max_lifetime_seconds: int = Field(
        default=24 * 3600, ge=0, validation_alias="QUANTIZED_JWT_MAX_LIFETIME_SECONDS")

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, value: str | None) -> str | None:
        if value:
            problem = database_url_problem(value)
            if problem is not None:
                raise ValueError(problem)
        return value

    @field_validator("admin_token")
    @classmethod
    def _admin_token_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        problem = admin_token_problem(value.get_secret_value()) if value is not None else None
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("jwt_secret")
    @classmethod
    def _jwt_secret_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        # RFC 7518 3.2: an HS256 key must be at least as long as the hash output.
        if value is not None and len(value.get_secret_value().encode()) < MIN_HMAC_SECRET_BYTES:
            raise ValueError(f"must be at least {MIN_HMAC_SECRET_BYTES} bytes for HS256")
        return value

    @field_validator("jwt_issuer", "jwt_audience")
    @classmethod
    def _blank_means_unset(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    def default_key_limits(self) -> RateLimits:
        return RateLimits(self.default_key_requests_per_minute, self.default_key_max_concurrent_requests)

    def default_account_limits(self) -> RateLimits:
        return RateLimits(self.default_account_requests_per_minute,
                          self.default_account_max_concurrent_requests)

    def resolved_database_url(self) -> str:
        """The configured URL, or the embedded SQLite file (creating its directory)."""
        return defaults.database_url_or_embedded(self.database_url, self.data_dir, "billing.db")
