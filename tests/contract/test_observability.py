"""deploy/observability stays true to the metrics: the alert rules pass
`promtool check rules`, and every metric the dashboard and the rules query, and
every metric the services define, is one the code exports and the docs list."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.registry import CollectorRegistry

import billing_svc.metrics  # noqa: F401 - registers billing's metrics
import catalog_svc.metrics  # noqa: F401 - registers the catalog's metrics
import provider_svc.metrics  # noqa: F401 - registers provider_svc's metrics
import quantized_runtime.metrics  # noqa: F401 - registers the gRPC metrics
from edge.metrics import LeaseAdmissionCollector
from tests.external_tools import required_tool

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "deploy" / "observability"
RULES = OBSERVABILITY / "alerts.yml"
DASHBOARD = OBSERVABILITY / "grafana-dashboard.json"
# Prometheus' own series for each target.
SCRAPE_SERIES = {"up"}
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def _families(registry: CollectorRegistry) -> dict[str, str]:
    return {family.name: family.type for family in registry.collect()}


def exported_families() -> dict[str, str]:
    """Every metric family the services export, by name, with its type."""
    leases = CollectorRegistry()
    leases.register(LeaseAdmissionCollector(SimpleNamespace(admitted=0, admitted_locally=0)))  # type: ignore[arg-type]
    return {**_families(REGISTRY), **_families(leases)}


def exported_series() -> set[str]:
    return {name + suffix for name, kind in exported_families().items() for suffix in _SUFFIXES[kind]}


def queried_names(expression: str) -> set[str]:
    """The series names in a PromQL expression (label matchers and groupings left out)."""
    without_labels = re.sub(r"\{[^}]*\}", "", expression)
    without_groupings = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "",
                               without_labels)
    return set(re.findall(r"\b((?:quantized|grpc|process)_[a-z0-9_]+|up)\b(?!\s*\()", without_groupings))


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def rule_expressions() -> list[str]:
    return [rule["expr"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_the_alert_rules_pass_promtool() -> None:
    promtool = required_tool("promtool", "prometheus")
    checked = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("source", ["dashboard", "rules"])
def test_every_queried_metric_is_exported(source: str) -> None:
    expressions = dashboard_expressions() if source == "dashboard" else rule_expressions()
    queried = set().union(*map(queried_names, expressions))
    assert queried, f"no metric found in the {source}"
    unknown = queried - exported_series() - SCRAPE_SERIES
    assert not unknown, f"the {source} queries metrics no service exports: {sorted(unknown)}"


def test_the_dashboard_shows_what_operators_need() -> None:
    queried = set().union(*map(queried_names, dashboard_expressions()))
    for needed in ("quantized_edge_requests_total", "quantized_edge_overhead_duration_seconds_bucket",
                   "quantized_edge_upstream_duration_seconds_bucket", "quantized_edge_charged_microcredits_total"):
        assert needed in queried


def test_every_metric_is_listed_in_the_operations_guide() -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    metrics_section = text[text.index("## Metrics"):]
    missing = [name for name in exported_families()
               if name.startswith(("quantized_", "grpc_")) and f"`{name}" not in metrics_section]
    assert not missing, f"docs/operations.md's Metrics section does not list: {missing}"
