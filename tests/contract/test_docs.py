"""The docs stay true to the code: every setting is documented, every CLI command too."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from quantized_runtime.grpc_engine import GRPC_EXPERIMENTS
from quantized_runtime.settings import env_names

ROOT = Path(__file__).resolve().parents[2]
SETTINGS_CLASSES = (
    "catalog_svc.settings:CatalogSettings",
    "billing_svc.settings:BillingSettings",
    "provider_svc.settings:ProviderSettings",
    "edge.settings:EdgeSettings",
)


def _variables() -> list[str]:
    names: set[str] = set()
    for path in SETTINGS_CLASSES:
        module, name = path.split(":")
        names.update(env_names(getattr(importlib.import_module(module), name)).values())
    return sorted(names)


@pytest.mark.parametrize("variable", _variables())
def test_every_environment_variable_is_documented(variable):
    text = (ROOT / "docs" / "configuration.md").read_text()
    assert f"`{variable}`" in text, f"{variable} is missing from docs/configuration.md"


def test_documented_variables_exist():
    text = (ROOT / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)`", text, flags=re.MULTILINE))
    # Read by the SDKs, gRPC core or the test suite, not by service settings.
    others = {"CI", "QUANTIZED_TEST_POSTGRES_URL", GRPC_EXPERIMENTS}
    stale = {name for name in documented - set(_variables()) - others
             if not name.startswith(("AWS_", "GOOGLE_", "OTEL_"))}
    assert not stale, f"docs/configuration.md documents variables no setting reads: {sorted(stale)}"
