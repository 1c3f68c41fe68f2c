"""Settings common to every gRPC service; each service subclasses with its own prefix."""

from __future__ import annotations

from typing import TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from quantized_runtime.channels import DEFAULT_MAX_MESSAGE_BYTES


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", env_prefix="QUANTIZED_")

    listen: str
    shutdown_grace_seconds: float = 10.0
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    log_level: str = "INFO"


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


class SettingsError(SystemExit):
    """Raised at start when a required setting is missing or invalid."""


def load_settings(cls: type[SettingsT]) -> SettingsT:
    """Read settings from the environment, or stop with a message naming each variable."""
    try:
        return cls()
    except ValidationError as exc:
        prefix = cls.model_config.get("env_prefix", "")
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            info = cls.model_fields.get(field)
            alias = info.validation_alias if info is not None else None
            name = alias if isinstance(alias, str) else f"{prefix}{field}".upper()
            problems.append(f"{name}: {error['msg']}")
        raise SettingsError("configuration error: " + "; ".join(problems)) from None
