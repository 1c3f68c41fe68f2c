"""The `quantized` command picks gRPC core's polling engine before grpc loads,
unless the operator chose for themselves."""

from __future__ import annotations

import os
import subprocess
import sys

from quantized_runtime.grpc_engine import GRPC_EXPERIMENTS, PREFERRED_EXPERIMENTS

# What the command's package leaves behind before any subcommand loads.
PROBE = "import sys, os, quantized_cli; print(os.environ.get('GRPC_EXPERIMENTS'), 'grpc' in sys.modules)"


def experiments_seen(**env: str) -> str:
    base = {key: value for key, value in os.environ.items() if key != GRPC_EXPERIMENTS}
    return subprocess.run([sys.executable, "-c", PROBE], env={**base, **env}, capture_output=True,
                          text=True, check=True).stdout.strip()


def test_the_command_sets_the_default_before_grpc_is_imported() -> None:
    # Set, and grpc not loaded yet: its first import (by a subcommand) reads it.
    assert experiments_seen() == f"{PREFERRED_EXPERIMENTS} False"


def test_an_operators_own_setting_wins() -> None:
    assert experiments_seen(GRPC_EXPERIMENTS="event_engine_client") == "event_engine_client False"
