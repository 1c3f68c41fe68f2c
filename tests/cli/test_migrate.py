"""`quantized migrate NAME` (the Kubernetes init container's command) brings a fresh
PostgreSQL database to the newest schema, and `quantized serve` then finds nothing
left to do."""

from __future__ import annotations

import os
import subprocess
import sys

import asyncpg
import pytest
from alembic.script import ScriptDirectory

from billing_svc.storage.migrate import alembic_config
from catalog_svc.migrate import MIGRATIONS_DIR as CATALOG_MIGRATIONS_DIR

ADMIN_TOKEN = "migrate-admin-token-0123456789abcdef"


def _heads() -> dict[str, str]:
    catalog = ScriptDirectory(str(CATALOG_MIGRATIONS_DIR)).get_current_head()
    billing = ScriptDirectory.from_config(alembic_config()).get_current_head()
    return {"catalog": catalog, "billing": billing}


def _migrate(service: str, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("QUANTIZED_")}
    env.update({"QUANTIZED_ADMIN_TOKEN": ADMIN_TOKEN,
                f"QUANTIZED_{service.upper()}_DATABASE_URL": database_url})
    return subprocess.run([sys.executable, "-m", "quantized_cli", "migrate", service],
                          env=env, capture_output=True, text=True, timeout=60)


async def _version(database_url: str) -> str:
    connection = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        return await connection.fetchval("SELECT version_num FROM alembic_version")
    finally:
        await connection.close()


@pytest.mark.postgres
@pytest.mark.parametrize("service", ["catalog", "billing"])
async def test_migrate_brings_a_fresh_database_to_head_and_is_idempotent(postgres_url, service):
    first = _migrate(service, postgres_url)
    assert first.returncode == 0, first.stderr
    assert await _version(postgres_url) == _heads()[service]
    again = _migrate(service, postgres_url)
    assert again.returncode == 0, again.stderr
    assert await _version(postgres_url) == _heads()[service]


def test_migrate_without_its_settings_names_the_missing_variable():
    env_missing_token = {key: value for key, value in os.environ.items() if not key.startswith("QUANTIZED_")}
    result = subprocess.run([sys.executable, "-m", "quantized_cli", "migrate", "catalog"],
                            env=env_missing_token, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "QUANTIZED_ADMIN_TOKEN" in result.stderr
