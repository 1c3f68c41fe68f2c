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


BACKENDS = ("catalog", "billing", "provider")
TLS_VARIABLES = ("QUANTIZED_TLS_CERT_FILE", "QUANTIZED_TLS_KEY_FILE", "QUANTIZED_TLS_CA_FILE")


def test_only_the_edges_http_port_is_published():
    published = {name: spec["ports"] for name, spec in COMPOSE["services"].items() if "ports" in spec}
    http_port = COMPOSE["services"]["edge"]["environment"]["QUANTIZED_EDGE_PORT"]
    assert published == {"edge": [f"{http_port}:{http_port}"]}


def test_the_services_and_postgres_share_a_network_with_no_route_out():
    assert COMPOSE["networks"]["internal"] == {"internal": True}
    for name, spec in COMPOSE["services"].items():
        assert "internal" in spec["networks"], name
    # Outside the internal network: the edge (its published port) and provider_svc (the upstreams).
    beyond = {name: sorted(set(spec["networks"]) - {"internal"}) for name, spec in COMPOSE["services"].items()}
    assert beyond == {"postgres": [], "catalog": [], "billing": [], "provider": ["upstream"], "edge": ["public"]}


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_runs_mutual_tls_with_its_own_certificate_from_secrets(service):
    spec = COMPOSE["services"][service]
    secrets = {f"/run/secrets/{name}": name for name in spec["secrets"]}
    cert, key, ca = (spec["environment"][name] for name in TLS_VARIABLES)
    assert (secrets[cert], secrets[key], secrets[ca]) == (f"{service}_crt", f"{service}_key", "ca_crt")
    assert set(spec["secrets"]) <= set(COMPOSE["secrets"])
    assert COMPOSE["secrets"][f"{service}_key"] == {"file": f"./certs/{service}.key"}


@pytest.mark.parametrize("service", BACKENDS)
def test_backend_health_checks_go_through_mutual_tls_naming_the_service(service):
    probe = COMPOSE["services"][service]["healthcheck"]["test"]
    args = build_parser().parse_args(probe[2:])
    assert args.service == service


@pytest.mark.parametrize("service", ("postgres", *SERVICES))
def test_every_container_restarts(service):
    assert COMPOSE["services"][service]["restart"] == "unless-stopped"


def test_each_database_has_its_own_role_and_password_from_the_environment():
    urls = {name: COMPOSE["services"][name]["environment"][f"QUANTIZED_{name.upper()}_DATABASE_URL"]
            for name in ("catalog", "billing")}
    for name, url in urls.items():
        assert url == (f"postgresql+asyncpg://{name}:${{QUANTIZED_{name.upper()}_DB_PASSWORD:?set "
                       f"QUANTIZED_{name.upper()}_DB_PASSWORD}}@postgres:5432/{name}")
    postgres = COMPOSE["services"]["postgres"]["environment"]
    assert postgres["POSTGRES_PASSWORD"] == "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
    init = (ROOT / "deploy" / "postgres-init.sh").read_text()
    for name in ("catalog", "billing"):
        assert f"CREATE ROLE {name} LOGIN PASSWORD :'{name}_password'" in init
        assert f"CREATE DATABASE {name} OWNER {name}" in init
        assert f"REVOKE ALL ON DATABASE {name} FROM PUBLIC" in init
        assert postgres[f"{name.upper()}_DB_PASSWORD"].startswith(f"${{QUANTIZED_{name.upper()}_DB_PASSWORD:?")
