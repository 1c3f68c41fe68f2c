"""The `quantized` command and each service's `python -m NAME.main` pick gRPC
core's polling engine before grpc loads, unless the operator chose for themselves."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from quantized_runtime.grpc_engine import GRPC_EXPERIMENTS, PREFERRED_EXPERIMENTS

# What a package leaves behind before its modules load: the command's, or a service's.
PROBE = "import sys, os, {package}; print(os.environ.get('GRPC_EXPERIMENTS'), 'grpc' in sys.modules)"


def experiments_seen(package: str, **env: str) -> str:
    base = {key: value for key, value in os.environ.items() if key != GRPC_EXPERIMENTS}
    return subprocess.run([sys.executable, "-c", PROBE.format(package=package)], env={**base, **env},
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.parametrize("package", ["quantized_cli", "edge", "catalog_svc", "billing_svc", "provider_svc"])
def test_the_default_is_set_before_grpc_is_imported(package: str) -> None:
    # Set, and grpc not loaded yet: its first import (by the package's modules) reads it.
    assert experiments_seen(package) == f"{PREFERRED_EXPERIMENTS} False"


def test_an_operators_own_setting_wins() -> None:
    assert experiments_seen("edge", GRPC_EXPERIMENTS="event_engine_client") == "event_engine_client False"
