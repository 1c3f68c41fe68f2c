"""provider_svc settings. Upstream credentials use their standard names and are all
optional: a provider without credentials fails its own calls, never the start."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from quantized_runtime.defaults import PROVIDER_ADDR, PROVIDER_METRICS_ADDR
from quantized_runtime.settings import InternalServiceSettings


class ProviderSettings(InternalServiceSettings):
    # validate_by_name: code (tests, benchmarks) can pass fields by name, the environment by alias.
    model_config = SettingsConfigDict(extra="ignore", env_prefix="QUANTIZED_PROVIDER_",
                                      validate_by_name=True, validate_by_alias=True)

    listen: str = PROVIDER_ADDR
    metrics_listen: str = PROVIDER_METRICS_ADDR
    # Cap on one upstream attempt; the caller's gRPC deadline caps the whole call.
    upstream_timeout_seconds: float = Field(default=120.0, gt=0)
    # Extra attempts after a 429/5xx, with exponential backoff (full jitter).
    upstream_retries: int = Field(default=2, ge=0, le=10)
    retry_backoff_seconds: float = Field(default=0.5, ge=0)
    # Threads for boto3 (blocking) calls; bounds concurrent Bedrock requests.
    bedrock_max_workers: int = Field(default=16, ge=1)
    # Keep-alive pool of the OpenAI client.
    openai_max_connections: int = Field(default=100, ge=1)

    # What this service spends upstream credentials on, whatever a route says
    # (provider_svc/admission.py). Comma-separated `provider/upstream-model-id`
    # entries (`provider/*`: every model of it). The default is what the shipped
    # catalog enables, plus the sandbox.
    allowed_models: Annotated[list[str], NoDecode] = ["openai/gpt-image-1", "sandbox/sandbox-image-1"]
    # Regions a route may name (an empty region is the adapter's default). The
    # default is the regions the shipped catalog's rows name.
    allowed_regions: Annotated[list[str], NoDecode] = ["us-east-1", "us-west-2", "us-central1"]
    # The most images one request may ask for, whatever the route's max_n.
    max_images_per_request: int = Field(default=10, ge=1, le=100)
    # Bedrock clients kept, one per region, least recently used dropped first.
    region_client_cache_size: int = Field(default=4, ge=1, le=64)

    openai_api_key: SecretStr | None = Field(default=None, validation_alias="OPENAI_API_KEY")
    openai_base_url: str = Field(default="https://api.openai.com/v1", validation_alias="OPENAI_BASE_URL")
    openai_organization: str | None = Field(default=None, validation_alias="OPENAI_ORG_ID")
    openai_project: str | None = Field(default=None, validation_alias="OPENAI_PROJECT_ID")

    gemini_api_key: SecretStr | None = Field(default=None, validation_alias="GEMINI_API_KEY")
    gemini_base_url: str | None = Field(default=None, validation_alias="GOOGLE_GEMINI_BASE_URL")

    vertex_api_key: SecretStr | None = Field(default=None, validation_alias="QUANTIZED_VERTEX_API_KEY")
    vertex_project: str | None = Field(default=None, validation_alias="QUANTIZED_VERTEX_PROJECT")
    vertex_location: str | None = Field(default=None, validation_alias="QUANTIZED_VERTEX_LOCATION")
    vertex_base_url: str | None = Field(default=None, validation_alias="GOOGLE_VERTEX_BASE_URL")

    # boto3 reads the AWS credential chain itself; the endpoint is read here too so
    # that settings built in code (tests, benchmarks) can point at a local upstream.
    bedrock_endpoint_url: str | None = Field(default=None,
                                             validation_alias="AWS_ENDPOINT_URL_BEDROCK_RUNTIME")

    @field_validator("allowed_models", "allowed_regions", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    def allowed_model_set(self) -> frozenset[str]:
        return frozenset(self.allowed_models)

    def allowed_region_set(self) -> frozenset[str]:
        return frozenset(self.allowed_regions)
