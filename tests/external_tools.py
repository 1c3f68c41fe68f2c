"""External programs a test needs (promtool, prometheus): found, or the test
skips outside CI and fails in CI, as the PostgreSQL and Redis fixtures do."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


def required_tool(name: str, package: str) -> str:
    """The program's path; `package` is the Debian package that ships it (.ci/run installs it)."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        message = f"{name} is not installed (Debian package `{package}`; .ci/run installs it)"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(message)
        pytest.skip(message)
    return path
