"""Edge configuration from the environment."""

from __future__ import annotations

import pytest

from quantized_runtime import defaults
from quantized_runtime.settings import SettingsError, load_settings

from edge.settings import EdgeSettings

ENV_NAMES = ["QUANTIZED_EDGE_HOST", "QUANTIZED_EDGE_PORT", "QUANTIZED_EDGE_GRPC_LISTEN", "QUANTIZED_CATALOG_ADDR",
             "QUANTIZED_BILLING_ADDR", "QUANTIZED_PROVIDER_ADDR", "QUANTIZED_EDGE_REQUEST_TIMEOUT_SECONDS",
             "QUANTIZED_EDGE_MAX_BODY_BYTES", "QUANTIZED_EDGE_AUTH_CACHE_TTL_SECONDS",
             "QUANTIZED_EDGE_CATALOG_CACHE_TTL_SECONDS"]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    settings = load_settings(EdgeSettings)
    assert (settings.host, settings.port, settings.listen) == (
        "127.0.0.1", defaults.EDGE_HTTP_PORT, defaults.EDGE_GRPC_ADDR)
    assert (settings.catalog_addr, settings.billing_addr, settings.provider_addr) == (
        defaults.CATALOG_ADDR, defaults.BILLING_ADDR, defaults.PROVIDER_ADDR)
    assert settings.request_timeout_seconds == 180
    assert settings.max_body_bytes == 1024 * 1024
    assert settings.auth_cache_ttl_seconds <= 30 and settings.catalog_cache_ttl_seconds <= 5


def test_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTIZED_EDGE_PORT", "9090")
    monkeypatch.setenv("QUANTIZED_EDGE_GRPC_LISTEN", "0.0.0.0:6000")
    monkeypatch.setenv("QUANTIZED_CATALOG_ADDR", "catalog:1")
    monkeypatch.setenv("QUANTIZED_BILLING_ADDR", "billing:2")
    monkeypatch.setenv("QUANTIZED_PROVIDER_ADDR", "provider:3")
    monkeypatch.setenv("QUANTIZED_EDGE_REQUEST_TIMEOUT_SECONDS", "30")
    monkeypatch.setenv("QUANTIZED_EDGE_MAX_BODY_BYTES", "2048")
    settings = load_settings(EdgeSettings)
    assert (settings.port, settings.listen, settings.catalog_addr, settings.billing_addr,
            settings.provider_addr, settings.request_timeout_seconds, settings.max_body_bytes) == (
        9090, "0.0.0.0:6000", "catalog:1", "billing:2", "provider:3", 30, 2048)


def test_an_auth_cache_longer_than_30_seconds_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTIZED_EDGE_AUTH_CACHE_TTL_SECONDS", "60")
    with pytest.raises(SettingsError, match="QUANTIZED_EDGE_AUTH_CACHE_TTL_SECONDS"):
        load_settings(EdgeSettings)
