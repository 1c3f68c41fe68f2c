"""A PostgreSQL cluster of a test's own, to stop and start under running services.

The shared server (QUANTIZED_TEST_POSTGRES_URL) serves other tests at the same
time and is never stopped. A test that needs PostgreSQL to go away makes its own
cluster with Debian's cluster tools (`pg_createcluster`, run as root, trust
authentication, a free port) and drops it afterwards.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import uuid
from pathlib import Path

import asyncpg

CLUSTER_TOOLS = ("pg_createcluster", "pg_ctlcluster", "pg_dropcluster")
COMMAND_TIMEOUT_SECONDS = 120


def cluster_tools_problem() -> str | None:
    """Why a throwaway cluster cannot be made here; None when it can."""
    missing = [tool for tool in CLUSTER_TOOLS if shutil.which(tool) is None]
    if missing:
        return f"Debian's PostgreSQL cluster tools are not installed (missing {', '.join(missing)})"
    if os.geteuid() != 0:
        return "creating a PostgreSQL cluster needs root (pg_createcluster)"
    if not installed_versions():
        return "no PostgreSQL server version under /etc/postgresql"
    return None


def installed_versions() -> list[str]:
    root = Path("/etc/postgresql")
    return sorted((entry.name for entry in root.iterdir() if entry.name.isdigit()), key=int) if root.is_dir() else []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _run(*command: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(process.communicate(), COMMAND_TIMEOUT_SECONDS)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {process.returncode}: {output.decode(errors='replace')}")


class ThrowawayPostgres:
    def __init__(self) -> None:
        self.version = installed_versions()[-1]
        self.name = f"quantized_{uuid.uuid4().hex[:10]}"
        self.port = _free_port()

    @property
    def _admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    async def create(self) -> None:
        await _run("pg_createcluster", self.version, self.name, "--port", str(self.port), "--start",
                   "--", "--auth=trust")

    async def stop(self) -> None:
        """Stop it the way an operator's restart does: fast shutdown, sessions ended."""
        await _run("pg_ctlcluster", self.version, self.name, "stop", "-m", "fast")

    async def start(self) -> None:
        await _run("pg_ctlcluster", self.version, self.name, "start")

    async def drop(self) -> None:
        await _run("pg_dropcluster", self.version, self.name, "--stop")

    async def create_database(self, name: str) -> str:
        """A new database on the cluster, as an SQLAlchemy asyncpg URL."""
        admin = await asyncpg.connect(self._admin_dsn)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{name}"
