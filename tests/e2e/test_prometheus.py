"""A real Prometheus scrapes the running `quantized dev` stack: every service is
up, the edge counts each request, every /metrics passes `promtool check
metrics`, and no secret appears in a metric or a log line.

Prometheus and promtool come from Debian's `prometheus` package (.ci/run
installs it); without them these tests skip outside CI and fail in CI.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.dev_stack import DevStack, start_dev_stack
from tests.external_tools import required_tool

pytestmark = pytest.mark.slow

SERVICES = ("edge", "catalog", "billing", "provider")
REQUESTS = 5
SCRAPE_WAIT_SECONDS = 60
# Planted where a careless line could leak it: an upstream credential in provider_svc's environment.
PLANTED_UPSTREAM_KEY = "sk-planted-upstream-credential-5b1f0c"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Observed:
    stack: DevStack
    prometheus_url: str
    metrics_addrs: dict[str, str]
    data_dir: Path

    def scrape(self, service: str) -> str:
        return httpx.get(f"http://{self.metrics_addrs[service]}/metrics", timeout=10).text

    def query(self, promql: str) -> list[dict]:
        answer = httpx.get(f"{self.prometheus_url}/api/v1/query", params={"query": promql}, timeout=10).json()
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def wait_for(self, promql: str, expected: float) -> list[dict]:
        """The query's result once its single value equals `expected` (or the last one seen)."""
        give_up = time.monotonic() + SCRAPE_WAIT_SECONDS
        result = self.query(promql)
        while time.monotonic() < give_up:
            if len(result) == 1 and float(result[0]["value"][1]) == expected:
                break
            time.sleep(0.5)
            result = self.query(promql)
        return result


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    prometheus = required_tool("prometheus", "prometheus")
    root = tmp_path_factory.mktemp("observed")
    stack = start_dev_stack(root, settings={"OPENAI_API_KEY": PLANTED_UPSTREAM_KEY})
    process = None
    try:
        metrics_addrs = stack.state["metrics_addrs"]
        config = root / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n" + "".join(
            f"  - job_name: {name}\n    static_configs:\n      - targets: ['{metrics_addrs[name]}']\n"
            for name in SERVICES))
        port = free_port()
        with (root / "prometheus.log").open("wb") as log:  # the child keeps its own descriptor
            process = subprocess.Popen(
                [prometheus, f"--config.file={config}", f"--storage.tsdb.path={root / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{port}"],
                stdout=subprocess.DEVNULL, stderr=log)
        url = f"http://127.0.0.1:{port}"
        give_up = time.monotonic() + SCRAPE_WAIT_SECONDS
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > give_up or process.poll() is not None:
                raise AssertionError("prometheus did not start:\n" + (root / "prometheus.log").read_text())
            time.sleep(0.2)
        yield Observed(stack, url, metrics_addrs, root / "data")
    finally:
        if process is not None:
            process.terminate()
            process.wait(30)
        stack.stop()


def test_quantized_dev_prints_each_metrics_address(observed: Observed) -> None:
    (line,) = [line for line in observed.stack.stdout_lines if line.startswith("# metrics:")]
    for name in SERVICES:
        assert f"{name} http://{observed.metrics_addrs[name]}/metrics" in line


def test_prometheus_counts_each_request_and_sees_every_service_up(observed: Observed) -> None:
    headers = {"Authorization": f"Bearer {observed.stack.api_key}"}
    with httpx.Client(base_url=observed.stack.base_url, headers=headers, timeout=60) as client:
        for index in range(REQUESTS):
            response = client.post("/images/generations", json={
                "model": "sandbox-image-1", "prompt": f"a hedgehog {index}", "size": "64x64"})
            assert response.status_code == 200, response.text
    counted = observed.wait_for(
        'sum(quantized_edge_requests_total{route="/v1/images/generations"})', REQUESTS)
    assert [float(series["value"][1]) for series in counted] == [REQUESTS]
    # Each job's first scrape may come up to a scrape interval after another's.
    observed.wait_for("count(up == 1)", len(SERVICES))
    up = {series["metric"]["job"]: series["value"][1] for series in observed.query("up")}
    assert up == {name: "1" for name in SERVICES}
    # The generations also reached each service's own metrics.
    generated = observed.wait_for('sum(quantized_provider_generate_calls_total{outcome="OK"})', REQUESTS)
    assert [float(series["value"][1]) for series in generated] == [REQUESTS]
    assert observed.query("sum(quantized_billing_ledger_operations_total) > 0")
    assert observed.query("sum(quantized_catalog_route_resolutions_total) > 0")
    assert observed.query('grpc_server_handled_total{job="billing",grpc_method="Authenticate",grpc_code="OK"}')


def test_every_service_exposes_metrics_that_promtool_accepts(observed: Observed, tmp_path: Path) -> None:
    promtool = required_tool("promtool", "prometheus")
    for name in SERVICES:
        exposition = observed.scrape(name)
        assert "process_cpu_seconds_total" in exposition
        checked = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True,
                                 text=True, timeout=60)
        assert checked.returncode == 0 and not checked.stdout.strip() and not checked.stderr.strip(), (
            name, checked.stdout, checked.stderr)


def test_no_secret_reaches_a_metric_or_a_log_line(observed: Observed) -> None:
    with httpx.Client(timeout=60) as client:
        refused = client.post(f"{observed.stack.base_url}/images/generations",
                              headers={"Authorization": "Bearer sk-quantized-planted-unknown-key"},
                              json={"model": "sandbox-image-1", "prompt": "a hedgehog"})
    assert refused.status_code == 401
    secrets = {
        "the dev account's API key": observed.stack.api_key,
        "an unknown key a caller sent": "sk-quantized-planted-unknown-key",
        "an upstream credential": PLANTED_UPSTREAM_KEY,
        "the admin token": (observed.data_dir / "admin-token").read_text().strip(),
    }
    exposed = {f"{name} /metrics": observed.scrape(name) for name in SERVICES}
    logs = {f"{path.name}": path.read_text(errors="replace")
            for path in (observed.data_dir / "logs").glob("*.log")}
    assert set(logs) == {f"{name}.log" for name in SERVICES}
    assert '"message": "request"' in logs["edge.log"]
    for where, text in {**exposed, **logs}.items():
        for what, secret in secrets.items():
            assert secret not in text, f"{what} appears in {where}"


def test_metrics_are_not_served_on_the_public_port(observed: Observed) -> None:
    public = observed.stack.base_url.removesuffix("/v1")
    assert httpx.get(f"{public}/metrics", timeout=10).status_code == 404
