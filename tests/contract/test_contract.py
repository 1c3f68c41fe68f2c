"""The proto contract: committed stubs are fresh, buf lint and buf format are clean."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ROOT / "gen"


def _files(tree: Path) -> set[str]:
    return {str(p.relative_to(tree)) for p in tree.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


def test_committed_stubs_match_a_fresh_generation(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "tools" / "gen_protos.py"), str(tmp_path)], check=True)
    fresh, committed = _files(tmp_path), _files(GENERATED)
    assert fresh == committed, "generated file set differs: run `make proto`"
    _, mismatch, errors = filecmp.cmpfiles(tmp_path, GENERATED, sorted(fresh), shallow=False)
    assert not mismatch and not errors, f"stale generated files {mismatch + errors}: run `make proto`"


def _buf() -> str:
    local = ROOT / "node_modules" / ".bin" / "buf"
    found = str(local) if local.exists() else shutil.which("buf")
    if found is None:
        message = "buf CLI not installed (npm install installs @bufbuild/buf)"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(message)
        pytest.skip(message)
    return found


def test_buf_lint_is_clean():
    result = subprocess.run([_buf(), "lint"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_format_is_clean():
    result = subprocess.run([_buf(), "format", "--diff", "--exit-code"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
