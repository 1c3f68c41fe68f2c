"""Settings common to every gRPC service; each service subclasses with its own prefix."""

from __future__ import annotations

from typing import TypeVar

from pydantic import AliasChoices, ValidationError
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


def env_names(cls: type[BaseSettings]) -> dict[str, str]:
    """Environment variable name of each settings field (documentation and checks use it)."""
    prefix = cls.model_config.get("env_prefix", "")
    names = {}
    for field, info in cls.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, str):
            names[field] = alias
        elif isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
            names[field] = alias.choices[0]
        else:
            names[field] = f"{prefix}{field}".upper()
    return names


def load_settings(cls: type[SettingsT]) -> SettingsT:
    """Read settings from the environment, or stop with a message naming each variable."""
    try:
        return cls()
    except ValidationError as exc:
        names = env_names(cls)
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            problems.append(f"{names.get(field, field)}: {error['msg']}")
        raise SettingsError("configuration error: " + "; ".join(problems)) from None
