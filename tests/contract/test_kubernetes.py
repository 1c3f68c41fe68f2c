"""deploy/kubernetes renders with `kubectl kustomize`, validates offline against the
Kubernetes API schemas of KUBERNETES_VERSION (kubernetes-validate, strict), and
agrees with the real services: commands, settings, probe ports, the drain.

kubectl comes with the machine; without it these tests skip, except in CI, where
they fail (tests/conftest.py's rule for PostgreSQL).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from quantized_cli.main import build_parser
from quantized_cli.migrate import run as migrate_handler
from quantized_cli.serve import run as serve_handler
from quantized_runtime.settings import env_names
from tests.conftest import _in_ci
from tests.contract.test_compose import SDK_VARIABLE, _settings_class

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE_ROOT = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.32.0"
OVERLAYS = ("dev", "production")
SERVICES = ("catalog", "billing", "provider", "edge")
BACKENDS = ("catalog", "billing", "provider")
GRPC_PORTS = {"edge": 50050, "catalog": 50051, "billing": 50052, "provider": 50053}
# The backends' plaintext health port (QUANTIZED_<SERVICE>_HEALTH_LISTEN), one number for the three.
HEALTH_PORT = 8090
# Where each serving container finds its `quantized-tls-<service>` Secret's files.
TLS_FILES = {"QUANTIZED_TLS_CERT_FILE": "tls.crt", "QUANTIZED_TLS_KEY_FILE": "tls.key",
             "QUANTIZED_TLS_CA_FILE": "ca.crt"}
EDGE_HTTP_PORT = 8080
POSTGRES_PORT = 5432
NAME_LABEL = "app.kubernetes.io/name"


@cache
def _render(overlay: str) -> tuple[dict, ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        message = "kubectl is not installed: the Kubernetes manifests cannot be rendered"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    rendered = subprocess.run([kubectl, "kustomize", str(KUSTOMIZE_ROOT / "overlays" / overlay)],
                              capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    return tuple(resource for resource in yaml.safe_load_all(rendered.stdout) if resource)


def _of_kind(overlay: str, kind: str) -> dict[str, dict]:
    return {resource["metadata"]["name"]: resource for resource in _render(overlay) if resource["kind"] == kind}


def _pod_spec(overlay: str, service: str) -> dict:
    return _of_kind(overlay, "Deployment")[service]["spec"]["template"]["spec"]


def _container(overlay: str, service: str) -> dict:
    [container] = _pod_spec(overlay, service)["containers"]
    return container


def _environment(overlay: str, container: dict) -> dict[str, str | None]:
    """Every variable a container gets: its ConfigMaps' keys and values, and its own
    `env` entries (None for those from a Secret)."""
    config_maps = _of_kind(overlay, "ConfigMap")
    environment: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        environment.update(config_maps[source["configMapRef"]["name"]]["data"])
    for variable in container.get("env", []):
        environment[variable["name"]] = variable.get("value")
    return environment


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_resource_validates_against_the_kubernetes_schemas(overlay):
    for resource in _render(overlay):
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("service", SERVICES)
def test_commands_are_the_real_serve_and_migrate_commands(overlay, service):
    args = build_parser().parse_args(_container(overlay, service)["command"][1:])
    assert args.handler is serve_handler and args.service == service
    for init in _pod_spec(overlay, service).get("initContainers", []):
        args = build_parser().parse_args(init["command"][1:])
        assert args.handler is migrate_handler and args.service == service
        assert init["image"] == _container(overlay, service)["image"]
    # The services with a database migrate in an init container, before the pod serves.
    assert bool(_pod_spec(overlay, service).get("initContainers")) == (service in ("catalog", "billing"))


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("service", SERVICES)
def test_environment_names_real_settings_and_covers_required_ones(overlay, service):
    settings = _settings_class(service)
    names = env_names(settings)
    required = [names[name] for name, info in settings.model_fields.items() if info.is_required()]
    pod = _pod_spec(overlay, service)
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        environment = _environment(overlay, container)
        unknown = [var for var in environment if var not in names.values() and not SDK_VARIABLE.match(var)]
        assert not unknown, f"{service}/{container['name']}: variables no setting reads: {unknown}"
        missing = [var for var in required if var not in environment]
        assert not missing, f"{service}/{container['name']}: required settings not set: {missing}"


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("service", SERVICES)
def test_probes_are_grpc_health_checks_on_a_port_kubelet_can_speak_to(overlay, service):
    """The backends' service ports require a client certificate, which kubelet's
    `grpc:` probes cannot present: they probe the plaintext health port. The edge's
    gRPC port is public (API keys), so it is probed there."""
    container = _container(overlay, service)
    environment = _environment(overlay, container)
    listen = environment["QUANTIZED_EDGE_GRPC_LISTEN" if service == "edge" else f"QUANTIZED_{service.upper()}_LISTEN"]
    assert listen == f"0.0.0.0:{GRPC_PORTS[service]}"
    assert {"containerPort": GRPC_PORTS[service], "name": "grpc"} in container["ports"]
    if service == "edge":
        probed = GRPC_PORTS["edge"]
    else:
        probed = HEALTH_PORT
        assert environment[f"QUANTIZED_{service.upper()}_HEALTH_LISTEN"] == f"0.0.0.0:{HEALTH_PORT}"
        assert {"containerPort": HEALTH_PORT, "name": "health"} in container["ports"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": probed}, probe


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("service", SERVICES)
def test_every_serving_container_takes_its_certificate_from_its_mounted_secret(overlay, service):
    pod = _pod_spec(overlay, service)
    container = _container(overlay, service)
    environment = _environment(overlay, container)
    [volume] = [volume for volume in pod["volumes"]
                if volume.get("secret", {}).get("secretName") == f"quantized-tls-{service}"]
    # Required: a pod without its certificate must not start in plaintext.
    assert not volume["secret"].get("optional", False)
    assert "items" not in volume["secret"]  # the Secret's keys are the file names
    [mount] = [mount for mount in container["volumeMounts"] if mount["name"] == volume["name"]]
    assert mount["readOnly"] is True
    for variable, key in TLS_FILES.items():
        assert environment.get(variable) == f"{mount['mountPath']}/{key}", variable
    # The migrations talk to PostgreSQL only: no certificate, which they could not read.
    for init in pod.get("initContainers", []):
        assert not set(TLS_FILES) & set(_environment(overlay, init)), init["name"]
        assert not any(mount["name"] == volume["name"] for mount in init.get("volumeMounts", []))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_cpu_and_memory_requests_and_limits(overlay):
    for kind in ("Deployment", "StatefulSet"):
        for name, workload in _of_kind(overlay, kind).items():
            pod = workload["spec"]["template"]["spec"]
            for container in [*pod.get("initContainers", []), *pod["containers"]]:
                for bound in ("requests", "limits"):
                    assert set(container["resources"][bound]) == {"cpu", "memory"}, f"{name}/{container['name']}"


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("service", SERVICES)
def test_termination_covers_the_prestop_pause_and_the_drain(overlay, service):
    pod = _pod_spec(overlay, service)
    container = _container(overlay, service)
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    grace = float(_environment(overlay, container)[f"QUANTIZED_{service.upper()}_SHUTDOWN_GRACE_SECONDS"])
    assert pod["terminationGracePeriodSeconds"] > float(command[1]) + grace


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_edge_reaches_each_backend_through_its_headless_service(overlay):
    services = _of_kind(overlay, "Service")
    edge = _environment(overlay, _container(overlay, "edge"))
    for backend in BACKENDS:
        assert services[backend]["spec"]["clusterIP"] == "None"
        assert [port["port"] for port in services[backend]["spec"]["ports"]] == [GRPC_PORTS[backend]]
        assert edge[f"QUANTIZED_{backend.upper()}_ADDR"] == f"dns:///{backend}:{GRPC_PORTS[backend]}"
    assert {port["port"] for port in services["edge"]["spec"]["ports"]} == {EDGE_HTTP_PORT, GRPC_PORTS["edge"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_edge_and_provider_autoscale_and_every_service_has_a_disruption_budget(overlay):
    autoscalers = _of_kind(overlay, "HorizontalPodAutoscaler")
    assert {hpa["spec"]["scaleTargetRef"]["name"] for hpa in autoscalers.values()} == {"edge", "provider"}
    budgets = _of_kind(overlay, "PodDisruptionBudget")
    assert {budget["spec"]["selector"]["matchLabels"][NAME_LABEL] for budget in budgets.values()} == set(SERVICES)


def test_production_leaves_the_secrets_to_the_operator_and_dev_fills_every_required_one():
    assert _of_kind("production", "Secret") == {}
    secrets = _of_kind("dev", "Secret")
    for service in SERVICES:
        pod = _pod_spec("dev", service)
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            for variable in container.get("env", []):
                reference = variable["valueFrom"]["secretKeyRef"]
                if not reference.get("optional"):
                    assert reference["key"] in secrets[reference["name"]]["stringData"], variable["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_overlay_ships_a_certificate_or_key(overlay):
    """The `quantized-tls-<service>` Secrets come from the operator's CA in every
    overlay (docs/deployment.md); one in an overlay would ship a key, or, empty,
    overwrite the operator's at each apply."""
    secrets = _of_kind(overlay, "Secret")
    assert not [name for name in secrets if name.startswith("quantized-tls-")]
    for name, secret in secrets.items():
        values = [*secret.get("stringData", {}).values(), *secret.get("data", {}).values()]
        assert not any("-----BEGIN" in value for value in values), name
    documented = (ROOT / "docs" / "deployment.md").read_text()
    assert "quantized certificates" in documented and "create secret generic quantized-tls-" in documented


def test_the_dev_database_is_created_by_the_init_script_compose_runs():
    init = _of_kind("dev", "ConfigMap")["postgres-init"]["data"]["init.sh"]
    assert init.strip() == (ROOT / "deploy" / "postgres-init.sh").read_text().strip()


# NetworkPolicy, evaluated: which peer may open a connection to which port.

@dataclass(frozen=True)
class Peer:
    """A pod of this namespace (labels), a pod of another namespace, or an address
    outside the cluster (`external`)."""

    name: str
    labels: dict = field(default_factory=dict, hash=False)
    own_namespace: bool = True
    external: bool = False


OUTSIDE = Peer("a client outside the cluster", external=True)
OTHER_NAMESPACE = Peer("a pod of another namespace", {NAME_LABEL: "stranger"}, own_namespace=False)
MANAGED_POSTGRES = Peer("a managed PostgreSQL", external=True)


def _pods(overlay: str) -> dict[str, Peer]:
    pods = {}
    for kind in ("Deployment", "StatefulSet"):
        for name, workload in _of_kind(overlay, kind).items():
            pods[name] = Peer(name, workload["spec"]["template"]["metadata"]["labels"])
    return pods


def _selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(key) == value for key, value in selector.get("matchLabels", {}).items())


def _peer_matches(rule_peer: dict, peer: Peer) -> bool:
    if "ipBlock" in rule_peer:
        return peer.external
    if peer.external:
        return False
    if "namespaceSelector" in rule_peer:
        # Only `{}` (every namespace) is used for our pods' peers.
        if rule_peer["namespaceSelector"]:
            return False
        return _selects(rule_peer.get("podSelector", {}), peer.labels)
    return peer.own_namespace and _selects(rule_peer["podSelector"], peer.labels)


def _rule_allows(rule: dict, peers_key: str, peer: Peer, port: int) -> bool:
    ports = rule.get("ports")
    if ports and not any(entry["port"] == port for entry in ports):
        return False
    peers = rule.get(peers_key)
    return not peers or any(_peer_matches(entry, peer) for entry in peers)


def _permitted(overlay: str, pod: Peer, direction: str, other: Peer, port: int) -> bool:
    """Whether POD's policies let a connection on PORT go to (Egress) or come from
    (Ingress) OTHER."""
    if pod.external or not pod.own_namespace:
        return True  # not governed by this namespace's policies
    rules_key, peers_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    policies = [policy["spec"] for policy in _of_kind(overlay, "NetworkPolicy").values()]
    governing = [spec for spec in policies
                 if direction in spec["policyTypes"] and _selects(spec["podSelector"], pod.labels)]
    if not governing:
        return True
    return any(_rule_allows(rule, peers_key, other, port)
               for spec in governing for rule in spec.get(rules_key, []))


def _allowed(overlay: str, source: Peer, destination: Peer, port: int) -> bool:
    return (_permitted(overlay, source, "Egress", destination, port)
            and _permitted(overlay, destination, "Ingress", source, port))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_edge_reaches_the_internal_services(overlay):
    pods = _pods(overlay)
    for backend in BACKENDS:
        port = GRPC_PORTS[backend]
        assert _allowed(overlay, pods["edge"], pods[backend], port), backend
        others = [peer for name, peer in pods.items() if name != "edge"] + [OUTSIDE, OTHER_NAMESPACE]
        reaching = [peer.name for peer in others if _allowed(overlay, peer, pods[backend], port)]
        assert reaching == [], f"{backend}:{port} reachable from {reaching}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_backends_health_port_is_open_to_the_cluster_and_only_to_it(overlay):
    """Kubelet's probes and in-cluster monitors reach the health port; a pod's own
    egress policy still decides whether it may call out (none of ours needs to)."""
    pods = _pods(overlay)
    for backend in BACKENDS:
        destination = pods[backend]
        assert _allowed(overlay, OTHER_NAMESPACE, destination, HEALTH_PORT), backend
        admitted = [peer.name for peer in pods.values()
                    if _permitted(overlay, destination, "Ingress", peer, HEALTH_PORT)]
        assert sorted(admitted) == sorted(pods), backend
        assert not _allowed(overlay, OUTSIDE, destination, HEALTH_PORT), backend
        # The health port is no way into the service port, nor the service port into it.
        assert not _allowed(overlay, OTHER_NAMESPACE, destination, GRPC_PORTS[backend]), backend


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_catalog_and_billing_reach_postgresql(overlay):
    pods = _pods(overlay)
    databases = [pods["postgres"]] if "postgres" in pods else [MANAGED_POSTGRES]
    for database in databases:
        reaching = {name for name, peer in pods.items()
                    if peer is not database and _allowed(overlay, peer, database, POSTGRES_PORT)}
        assert reaching == {"catalog", "billing"}, database.name
        if not database.external:
            assert not _allowed(overlay, OTHER_NAMESPACE, database, POSTGRES_PORT)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_edge_http_port_is_open_to_clients_and_nothing_else_of_it_is(overlay):
    edge = _pods(overlay)["edge"]
    assert _allowed(overlay, OUTSIDE, edge, EDGE_HTTP_PORT)
    assert _allowed(overlay, OTHER_NAMESPACE, edge, GRPC_PORTS["edge"])
    assert not _allowed(overlay, OUTSIDE, edge, GRPC_PORTS["edge"])
    assert not _allowed(overlay, OUTSIDE, edge, POSTGRES_PORT)


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("service", SERVICES)
def test_each_service_serves_metrics_to_in_cluster_scrapers_only(overlay, service):
    """Its metrics address is the port its pod declares and annotates for
    Prometheus; a scraper in the cluster reaches it, a client outside does not."""
    address = _environment(overlay, _container(overlay, service))[f"QUANTIZED_{service.upper()}_METRICS_LISTEN"]
    port = int(address.rsplit(":", 1)[1])
    assert address.startswith("0.0.0.0:")
    assert {"name": "metrics", "containerPort": port} in _container(overlay, service)["ports"]
    annotations = _of_kind(overlay, "Deployment")[service]["spec"]["template"]["metadata"]["annotations"]
    assert (annotations["prometheus.io/scrape"], annotations["prometheus.io/port"]) == ("true", str(port))
    pod = _pods(overlay)[service]
    assert _allowed(overlay, OTHER_NAMESPACE, pod, port)
    assert not _allowed(overlay, OUTSIDE, pod, port)
