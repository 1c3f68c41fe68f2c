"""Bring the billing database to the newest schema before serving."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Replicas starting together migrate one after the other (PostgreSQL advisory
# lock, held until the migration commits); SQLite's BEGIN IMMEDIATE does the same.
MIGRATION_LOCK_KEY = 0x62696C6C  # "bill"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


async def upgrade_to_head(engine: AsyncEngine) -> None:
    """Run `alembic upgrade head` on the engine's database, in one transaction."""

    def upgrade(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                               {"key": MIGRATION_LOCK_KEY})
        await conn.run_sync(upgrade)
