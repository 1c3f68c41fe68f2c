"""Bring the catalog database to the latest schema (Alembic, configured in code)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Replicas starting together on one PostgreSQL database take turns migrating.
_MIGRATION_LOCK_KEY = 0x5143_4154  # "QCAT"


def _upgrade_on(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
    elif connection.dialect.name == "sqlite":
        # Take SQLite's write lock before reading the schema version.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def upgrade_to_head(engine: AsyncEngine) -> None:
    """Run every pending migration in one transaction on the given engine."""
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade_on)
