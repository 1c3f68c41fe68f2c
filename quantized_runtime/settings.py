"""Settings common to every gRPC service; each service subclasses with its own prefix."""

from __future__ import annotations

from pathlib import Path
from typing import Self, TypeVar

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from quantized_runtime.channels import DEFAULT_MAX_MESSAGE_BYTES
from quantized_runtime.metrics import parse_listen_address
from quantized_runtime.tls import TLS_VARIABLES, TlsFiles, check_material


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", env_prefix="QUANTIZED_")

    listen: str
    shutdown_grace_seconds: float = 10.0
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    log_level: str = "INFO"
    # gRPC server reflection (grpcurl's service listing); off unless asked for.
    reflection: bool = False
    # This service's certificate and key, and the CA of every peer: mutual TLS on
    # its gRPC server and its channels. All three, or none (plaintext).
    tls_cert_file: Path | None = Field(default=None, validation_alias=TLS_VARIABLES[0])
    tls_key_file: Path | None = Field(default=None, validation_alias=TLS_VARIABLES[1])
    tls_ca_file: Path | None = Field(default=None, validation_alias=TLS_VARIABLES[2])
    # OpenTelemetry tracing (quantized_runtime/tracing.py), the same names in every
    # service: off unless asked for; the OTLP exporter reads the standard OTEL_* variables.
    tracing: bool = Field(default=False, validation_alias="QUANTIZED_TRACING")
    # The share of new traces kept (the edge starts them; the other services follow their caller).
    tracing_sample_ratio: float = Field(default=1.0, ge=0, le=1, validation_alias="QUANTIZED_TRACING_SAMPLE_RATIO")

    # Where Prometheus scrapes this service's /metrics (host:port); empty: no metrics
    # server. Each service sets its own default (quantized_runtime.defaults).
    metrics_listen: str = ""

    @field_validator("metrics_listen")
    @classmethod
    def _metrics_address(cls, value: str) -> str:
        if value:
            parse_listen_address(value)
        return value

    @model_validator(mode="after")
    def _tls_files_usable(self) -> Self:
        given = (self.tls_cert_file, self.tls_key_file, self.tls_ca_file)
        if any(given) and not all(given):
            missing = [name for name, path in zip(TLS_VARIABLES, given, strict=True) if not path]
            raise ValueError(f"{', '.join(TLS_VARIABLES)} go together; missing: {', '.join(missing)}")
        files = self.tls_files()
        if files is not None:
            try:
                check_material(files.read())
            except OSError as exc:
                raise ValueError(f"{', '.join(TLS_VARIABLES)}: cannot read {exc.filename}: "
                                 f"{exc.strerror}") from None
            except ValueError as exc:
                raise ValueError(f"{', '.join(TLS_VARIABLES)}: {exc}") from None
        return self

    def tls_files(self) -> TlsFiles | None:
        """The TLS files, or None for plaintext."""
        if self.tls_cert_file and self.tls_key_file and self.tls_ca_file:
            return TlsFiles(self.tls_cert_file, self.tls_key_file, self.tls_ca_file)
        return None


class InternalServiceSettings(ServiceSettings):
    """Catalog, billing and provider_svc: services only other services call."""

    # A second, plaintext address serving only grpc.health.v1, for probes that speak
    # no TLS (Kubernetes' `grpc:` probes) when the service port requires mutual TLS.
    health_listen: str | None = None


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
            if error["loc"]:
                field = str(error["loc"][0])
                problems.append(f"{names.get(field, field)}: {error['msg']}")
            else:  # a check across several settings names them in its message
                problems.append(error["msg"].removeprefix("Value error, "))
        raise SettingsError("configuration error: " + "; ".join(problems)) from None
