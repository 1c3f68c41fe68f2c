"""Services share only the generated contract and the runtime package.

A service that imports another service's code could not be deployed on its own;
this walks every module's imports (statically, with ast) to prove none does.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("edge", "catalog_svc", "billing_svc", "provider_svc")
SHARED = ("quantized_runtime",)


def _imported_top_levels(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize("package", SERVICES)
def test_a_service_imports_no_other_service(package):
    others = set(SERVICES) - {package} | {"quantized_cli"}
    offenders = {module: sorted(names & others)
                 for module, names in _imported_top_levels(package).items() if names & others}
    assert not offenders, f"{package} imports another service: {offenders}"


@pytest.mark.parametrize("package", SHARED)
def test_the_runtime_imports_no_service(package):
    forbidden = set(SERVICES) | {"quantized_cli"}
    offenders = {module: sorted(names & forbidden)
                 for module, names in _imported_top_levels(package).items() if names & forbidden}
    assert not offenders, f"{package} imports service code: {offenders}"


def test_the_shared_error_model_has_no_grpc_import():
    # Domain code raises these; it must not need gRPC to do so.
    imports = _imported_top_levels("quantized_runtime")["quantized_runtime/errors.py"]
    assert "grpc" not in imports and "grpc_status" not in imports


# The modules that translate between the wire and the domain; everything else in a
# service is domain or storage code and must not need gRPC.
# The entry point, the servicer, and the clients of peers.
GRPC_BOUNDARY_MODULES = {"main.py", "servicer.py", "peers.py", "ledger_client.py", "generate_client.py"}


@pytest.mark.parametrize("package", SERVICES)
def test_only_the_grpc_boundary_of_a_service_imports_grpc(package):
    offenders = sorted(module for module, names in _imported_top_levels(package).items()
                       if names & {"grpc", "grpc_status", "grpc_health", "grpc_reflection"}
                       and Path(module).name not in GRPC_BOUNDARY_MODULES)
    assert not offenders, f"domain or storage modules importing gRPC: {offenders}"
