"""Starting billing: the admin token is required, the embedded database lands in
the data directory, migrations build exactly the declared schema, and the ledger
refuses updates and deletes at the database level."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from billing_svc.main import RunningBilling, start
from billing_svc.settings import BillingSettings
from billing_svc.storage.engine import Database, create_engine
from billing_svc.storage.migrate import alembic_config, upgrade_to_head
from billing_svc.storage.schema import metadata
from quantized_runtime.settings import SettingsError, load_settings

from .conftest import StartBilling, make_settings

REPO_ROOT = Path(__file__).resolve().parents[2]


async def test_start_without_admin_token_stops_with_a_clear_message(data_dir) -> None:
    settings = make_settings(None, data_dir, admin_token=None)
    with pytest.raises(SettingsError) as caught:
        await start(settings)
    assert "QUANTIZED_ADMIN_TOKEN" in str(caught.value)
    assert "required" in str(caught.value)


def test_the_service_process_refuses_to_start_without_admin_token(tmp_path) -> None:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("QUANTIZED_")}
    env.update(PYTHONPATH=os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]),
               QUANTIZED_DATA_DIR=str(tmp_path), QUANTIZED_BILLING_LISTEN="127.0.0.1:0",
               QUANTIZED_BILLING_METRICS_LISTEN="")
    finished = subprocess.run([sys.executable, "-m", "billing_svc.main"], env=env,
                              capture_output=True, text=True, timeout=60)
    assert finished.returncode != 0
    assert "QUANTIZED_ADMIN_TOKEN" in finished.stderr


@pytest.mark.parametrize(("variable", "value"), [
    ("QUANTIZED_ADMIN_TOKEN", "   "),
    ("QUANTIZED_JWT_SECRET", "too-short"),
    ("QUANTIZED_BILLING_HOLD_TTL_SECONDS", "0"),
    ("QUANTIZED_BILLING_LEASE_SHARE", "0"),
    ("QUANTIZED_BILLING_LEASE_SHARE", "1.5"),
    ("QUANTIZED_BILLING_LEASE_TTL_SECONDS", "0"),
])
def test_invalid_settings_name_their_variable(monkeypatch, variable, value) -> None:
    monkeypatch.setenv("QUANTIZED_ADMIN_TOKEN", "an-admin-token-0123456789abcdef-0123")
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings(BillingSettings)
    assert variable in str(caught.value)
    if variable == "QUANTIZED_JWT_SECRET":
        assert value not in str(caught.value)


@pytest.mark.parametrize(("url", "problem"), [
    ("sqlite+aiosqlite://", "in-memory"),
    ("sqlite+aiosqlite:///:memory:", "in-memory"),
    ("sqlite+aiosqlite:///file:billing?mode=memory&cache=shared&uri=true", "in-memory"),
    ("sqlite+aiosqlite:///file:billing.db?uri=true", "?uri=true"),
    ("mysql+aiomysql://user@host/billing", "not a supported database"),
])
def test_a_database_without_a_money_path_is_refused_at_start(monkeypatch, url, problem) -> None:
    monkeypatch.setenv("QUANTIZED_ADMIN_TOKEN", "an-admin-token-0123456789abcdef-0123")
    monkeypatch.setenv("QUANTIZED_BILLING_DATABASE_URL", url)
    with pytest.raises(SettingsError) as caught:
        load_settings(BillingSettings)
    assert "QUANTIZED_BILLING_DATABASE_URL" in str(caught.value)
    assert problem in str(caught.value)
    assert "sqlite+aiosqlite:///path/to/billing.db" in str(caught.value)


def test_settings_defaults(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("QUANTIZED_ADMIN_TOKEN", "an-admin-token-0123456789abcdef-0123")
    monkeypatch.setenv("QUANTIZED_DATA_DIR", str(tmp_path / "fresh" / "data"))
    settings = load_settings(BillingSettings)
    assert settings.listen == "127.0.0.1:50052"
    assert settings.hold_ttl_seconds == 480
    assert (settings.lease_share, settings.lease_ttl_seconds) == (Decimal("0.5"), 30)
    assert settings.resolved_database_url() == (
        f"sqlite+aiosqlite:///{tmp_path / 'fresh' / 'data' / 'billing.db'}")
    assert (tmp_path / "fresh" / "data").is_dir()
    assert "an-admin-token-0123456789abcdef-0123" not in repr(settings)


async def test_embedded_database_is_created_in_the_data_dir_and_survives_restart(
        tmp_path) -> None:
    data_dir = tmp_path / "not-yet" / "there"
    first = await start(make_settings(None, str(data_dir)))
    try:
        account, _key = await first.billing.create_account("kept", 5, False)
    finally:
        await first.stop(0)
    assert (data_dir / "billing.db").is_file()
    second = await start(make_settings(None, str(data_dir)))
    try:
        view = await second.billing.account_view(account.account_id)
        assert view.account.balance == 5
    finally:
        await second.stop(0)


async def test_stopping_twice_is_harmless(database_url, data_dir) -> None:
    running = await start(make_settings(database_url, data_dir))
    await running.stop(0)
    await running.stop(0)


async def test_replicas_starting_together_all_come_up(database_url, data_dir) -> None:
    outcomes = await asyncio.gather(*(start(make_settings(database_url, data_dir))
                                      for _ in range(3)), return_exceptions=True)
    replicas = [o for o in outcomes if isinstance(o, RunningBilling)]
    try:
        assert len(replicas) == 3, outcomes
        account, _key = await replicas[0].billing.create_account("shared", 7, False)
        for replica in replicas:
            assert (await replica.billing.account_view(account.account_id)).account.balance == 7
    finally:
        for replica in replicas:
            await replica.stop(0)


async def test_migrations_build_exactly_the_declared_schema(start_billing: StartBilling,
                                                            database_url) -> None:
    await start_billing()
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            differences = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), metadata))
    finally:
        await engine.dispose()
    assert differences == []


@pytest.mark.parametrize("statement", [
    "UPDATE ledger SET amount = amount + 1000000",
    "DELETE FROM ledger",
    "UPDATE usage_records SET credits = 0",
])
async def test_the_ledger_is_append_only(start_billing: StartBilling, database_url,
                                         statement) -> None:
    client = await start_billing()
    account_id = (await client.create_account(credits=1_000)).account.account_id
    hold = await client.reserve(account_id, 100, "req-1")
    await client.settle(hold.hold_id, 100)
    engine = create_async_engine(database_url)
    try:
        with pytest.raises(DBAPIError) as caught:
            async with engine.begin() as conn:
                await conn.execute(text(statement))
        assert "append-only" in str(caught.value)
    finally:
        await engine.dispose()


async def test_migrating_a_0001_database_keeps_its_rows(database_url) -> None:
    """0002 rebuilds the SQLite tables it changes (foreign keys enforced, as the
    service connects) and alters PostgreSQL's in place; either way every row,
    and every reference between them, is kept."""

    def upgrade_to_0001(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")

    created = "2026-11-30 12:00:00+00:00"
    rows = [
        "INSERT INTO accounts (id, name, unlimited, balance, held, created_at) "
        f"VALUES ('acct_a', 'a', false, 900, 50, '{created}')",
        "INSERT INTO api_keys (id, account_id, prefix, secret_hash, created_at) "
        f"VALUES ('key_a', 'acct_a', 'sk-quantized-x', 'hash', '{created}')",
        "INSERT INTO holds (id, account_id, request_id, amount, status, charged, created_at, "
        f"expires_at, closed_at) VALUES ('hold_s', 'acct_a', 'req-s', 100, 'settled', 50, "
        f"'{created}', '{created}', '{created}')",
        "INSERT INTO holds (id, account_id, request_id, amount, status, created_at, expires_at) "
        f"VALUES ('hold_o', 'acct_a', 'req-o', 50, 'open', '{created}', '{created}')",
        "INSERT INTO ledger (account_id, kind, amount, hold_id, created_at) VALUES "
        f"('acct_a', 'grant', 1000, NULL, '{created}'), "
        f"('acct_a', 'hold', -100, 'hold_s', '{created}'), "
        f"('acct_a', 'settle', 50, 'hold_s', '{created}'), "
        f"('acct_a', 'hold', -50, 'hold_o', '{created}')",
        "INSERT INTO usage_records (account_id, hold_id, request_id, model_id, provider, "
        "images, credits, created_at) VALUES "
        f"('acct_a', 'hold_s', 'req-s', 'gpt-image-1', 'openai', 1, 50, '{created}')",
    ]
    database = Database(create_engine(database_url, pool_size=2))
    try:
        async with database.engine.begin() as conn:
            await conn.run_sync(upgrade_to_0001)
            for statement in rows:
                await conn.execute(text(statement))
        await upgrade_to_head(database.engine)
        async with database.engine.connect() as conn:
            account = (await conn.execute(text(
                "SELECT balance, held FROM accounts WHERE id = 'acct_a'"))).one()
            hold_rows = (await conn.execute(text(
                "SELECT id, kind, holder, amount, charged FROM holds ORDER BY id"))).all()
            ledger_sum = (await conn.execute(text("SELECT sum(amount) FROM ledger"))).scalar()
            usage = (await conn.execute(text(
                "SELECT hold_id, request_id, credits, late FROM usage_records"))).all()
            keys = (await conn.execute(text("SELECT count(*) FROM api_keys"))).scalar()
            if conn.dialect.name == "sqlite":
                assert (await conn.execute(text("PRAGMA foreign_key_check"))).all() == []
    finally:
        await database.dispose()
    assert (account.balance, account.held, ledger_sum, keys) == (900, 50, 900, 1)
    assert [tuple(row) for row in hold_rows] == [("hold_o", "request", None, 50, None),
                                                 ("hold_s", "request", None, 100, 50)]
    assert [(row.hold_id, row.request_id, row.credits, bool(row.late)) for row in usage] == [
        ("hold_s", "req-s", 50, False)]
