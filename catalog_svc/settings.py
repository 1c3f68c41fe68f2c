"""Catalog service settings (environment prefix QUANTIZED_CATALOG_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from quantized_runtime.admin_auth import admin_token_problem
from quantized_runtime.defaults import (
    CATALOG_ADDR,
    CATALOG_METRICS_ADDR,
    database_url_or_embedded,
    default_data_dir,
)
from quantized_runtime.settings import InternalServiceSettings

from catalog_svc.pricing import DEFAULT_CREDITS_PER_USD

BUNDLED_CATALOG_FILE = Path(__file__).resolve().parent / "catalog.yaml"


class CatalogSettings(InternalServiceSettings):
    model_config = SettingsConfigDict(extra="ignore", env_prefix="QUANTIZED_CATALOG_",
                                      populate_by_name=True)

    listen: str = CATALOG_ADDR
    metrics_listen: str = CATALOG_METRICS_ADDR
    # Empty: SQLite file catalog.db in the data directory.
    database_url: str = ""
    file: Path = BUNDLED_CATALOG_FILE
    # Rows of development-only providers (the sandbox) are active only when true.
    enable_sandbox: bool = False
    # How often each replica checks the database for another replica's change.
    refresh_seconds: float = Field(default=2.0, gt=0)
    credits_per_usd: int = Field(default=DEFAULT_CREDITS_PER_USD, gt=0)
    admin_token: SecretStr = Field(validation_alias="QUANTIZED_ADMIN_TOKEN")
    data_dir: Path = Field(default_factory=default_data_dir, validation_alias="QUANTIZED_DATA_DIR")

    @field_validator("admin_token")
    @classmethod
    def _admin_token_long_enough(cls, value: SecretStr) -> SecretStr:
        problem = admin_token_problem(value.get_secret_value())
        if problem is not None:
            raise ValueError(problem)
        return value

    def resolved_database_url(self) -> str:
        """The database URL; for the SQLite default, the data directory is created."""
        return database_url_or_embedded(self.database_url, self.data_dir, "catalog.db")
