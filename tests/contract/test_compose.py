"""docker-compose.yml and the Dockerfile agree with the real CLI and settings.

No Docker engine runs here, so this is how a renamed variable or command is caught.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest
import yaml
from pydantic_core import PydanticUndefined

from quantized_cli.main import build_parser
from quantized_cli.serve import run as serve_handler
from quantized_runtime.settings import env_names

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = ("catalog", "billing", "provider", "edge")
SETTINGS_CLASSES = {
    "catalog": "catalog_svc.settings:CatalogSettings",
    "billing": "billing_svc.settings:BillingSettings",
    "provider": "provider_svc.settings:ProviderSettings",
    "edge": "edge.settings:EdgeSettings",
}
# Read by the upstream SDKs themselves (boto3, openai-style, google-genai), not by our settings.
SDK_VARIABLE = re.compile(r"^(AWS_|GOOGLE_)")


def _settings_class(service: str):
    module, name = SETTINGS_CLASSES[service].split(":")
    return getattr(importlib.import_module(module), name)


def _dockerfile_commands() -> dict[str, list[str]]:
    commands, target = {}, None
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if match := re.match(r"FROM \S+ AS (\w+)", line):
            target = match.group(1)
        elif line.startswith("CMD ") and target:
            commands[target] = json.loads(line.removeprefix("CMD "))
    return commands


@pytest.mark.parametrize("service", SERVICES)
def test_command_is_the_real_serve_command(service):
    command = COMPOSE["services"][service]["command"]
    assert command[0] == "quantized"
    args = build_parser().parse_args(command[1:])
    assert args.handler is serve_handler and args.service == service
    assert _dockerfile_commands()[COMPOSE["services"][service]["build"]["target"]] == command


@pytest.mark.parametrize("service", SERVICES)
def test_environment_names_real_settings_and_covers_required_ones(service):
    settings = _settings_class(service)
    names = env_names(settings)
    environment = COMPOSE["services"][service].get("environment", {})
    unknown = [var for var in environment if var not in names.values() and not SDK_VARIABLE.match(var)]
    assert not unknown, f"{service}: variables no setting reads: {unknown}"
    required = [names[field] for field, info in settings.model_fields.items()
                if info.is_required() and info.default is PydanticUndefined]
    missing = [var for var in required if var not in environment]
    assert not missing, f"{service}: required settings not set: {missing}"


@pytest.mark.parametrize("service", SERVICES)
def test_health_check_probes_the_listen_port_and_backends_wait_for_health(service):
    spec = COMPOSE["services"][service]
    environment = spec["environment"]
    listen = environment.get("QUANTIZED_EDGE_GRPC_LISTEN") or environment[f"QUANTIZED_{service.upper()}_LISTEN"]
    probe = spec["healthcheck"]["test"]
    assert probe[1:3] == ["quantized", "health"]
    assert probe[3].rsplit(":", 1)[1] == listen.rsplit(":", 1)[1]
    for dependency in spec.get("depends_on", {}).values():
        assert dependency == {"condition": "service_healthy"}


def test_edge_reaches_each_backend_at_its_listen_port():
    edge = COMPOSE["services"]["edge"]["environment"]
    for backend in ("catalog", "billing", "provider"):
        listen = COMPOSE["services"][backend]["environment"][f"QUANTIZED_{backend.upper()}_LISTEN"]
        assert edge[f"QUANTIZED_{backend.upper()}_ADDR"] == f"{backend}:{listen.rsplit(':', 1)[1]}"
