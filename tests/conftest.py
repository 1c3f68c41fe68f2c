"""Fixtures shared by every test package.

PostgreSQL tests use the server at QUANTIZED_TEST_POSTGRES_URL (default: the local
trust-auth server). Each test gets a database of its own, dropped afterwards.
Outside CI an unreachable server skips those tests with the reason; in CI
(CI=true) it fails them, so they can never be skipped silently there.

Redis tests (marked `redis`) start a redis-server of their own on a free port,
so they can stop it mid-test without touching any Redis the machine runs; the
same rule applies when `redis-server` is not on PATH.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from quantized_runtime.grpc_engine import prefer_polling_engine
from tests.throwaway_postgres import ThrowawayPostgres, cluster_tools_problem

# In-process servers and channels run on the engine the services use; this must
# come before anything imports grpc.
prefer_polling_engine()

from tests.tls import Pki  # noqa: E402 - after the engine choice, as it loads grpc

POSTGRES_ADMIN_DSN = os.environ.get(
    "QUANTIZED_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


async def _postgres_reachable() -> str | None:
    import asyncpg

    try:
        conn = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=3)
    except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"
    await conn.close()
    return None


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database as an SQLAlchemy asyncpg URL."""
    import asyncpg

    problem = await _postgres_reachable()
    if problem is not None:
        message = f"PostgreSQL not reachable at {POSTGRES_ADMIN_DSN} ({problem})"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    name = f"quantized_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(POSTGRES_ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = POSTGRES_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        admin = await asyncpg.connect(POSTGRES_ADMIN_DSN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
async def throwaway_postgres() -> AsyncIterator[ThrowawayPostgres]:
    """A PostgreSQL cluster of this test's own, which it may stop and start (the
    shared server must never go down). Use it with the `postgres` mark. Without
    the cluster tools (or root) it skips outside CI and fails in CI."""
    problem = cluster_tools_problem()
    if problem is not None:
        message = f"no throwaway PostgreSQL cluster: {problem}"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    cluster = ThrowawayPostgres()
    await cluster.create()
    try:
        yield cluster
    finally:
        await cluster.drop()


class RedisServer:
    """A throwaway redis-server: no persistence, bound to loopback, stoppable mid-test."""

    def __init__(self, directory: str) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", directory],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline or self._process.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            self._process.wait(10)


@pytest.fixture
def redis_server(tmp_path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        message = "redis-server is not on PATH"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    server = RedisServer(str(tmp_path))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request, tmp_path) -> str:
    """Each storage test runs twice: on the embedded SQLite default and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'service.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def data_dir(tmp_path) -> Iterator[str]:
    path = tmp_path / "data"
    path.mkdir()
    yield str(path)


@pytest.fixture
def pki(tmp_path) -> Pki:
    """A throwaway CA with the dev stack's certificates (tests/tls.py)."""
    return Pki.create(tmp_path / "pki")
