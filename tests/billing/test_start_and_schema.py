"""Starting billing: the admin token is required, the embedded database lands in
the data directory, migrations build exactly the declared schema, and the ledger
refuses updates and deletes at the database level."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from billing_svc.main import RunningBilling, start
from billing_svc.settings import BillingSettings
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
               QUANTIZED_DATA_DIR=str(tmp_path), QUANTIZED_BILLING_LISTEN="127.0.0.1:0")
    finished = subprocess.run([sys.executable, "-m", "billing_svc.main"], env=env,
                              capture_output=True, text=True, timeout=60)
    assert finished.returncode != 0
    assert "QUANTIZED_ADMIN_TOKEN" in finished.stderr


@pytest.mark.parametrize(("variable", "value"), [
    ("QUANTIZED_ADMIN_TOKEN", "   "),
    ("QUANTIZED_JWT_SECRET", "too-short"),
    ("QUANTIZED_BILLING_HOLD_TTL_SECONDS", "0"),
])
def test_invalid_settings_name_their_variable(monkeypatch, variable, value) -> None:
    monkeypatch.setenv("QUANTIZED_ADMIN_TOKEN", "an-admin-token")
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
    monkeypatch.setenv("QUANTIZED_ADMIN_TOKEN", "an-admin-token")
    monkeypatch.setenv("QUANTIZED_BILLING_DATABASE_URL", url)
    with pytest.raises(SettingsError) as caught:
        load_settings(BillingSettings)
    assert "QUANTIZED_BILLING_DATABASE_URL" in str(caught.value)
    assert problem in str(caught.value)
    assert "sqlite+aiosqlite:///path/to/billing.db" in str(caught.value)


def test_settings_defaults(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("QUANTIZED_ADMIN_TOKEN", "an-admin-token")
    monkeypatch.setenv("QUANTIZED_DATA_DIR", str(tmp_path / "fresh" / "data"))
    settings = load_settings(BillingSettings)
    assert settings.listen == "127.0.0.1:50052"
    assert settings.hold_ttl_seconds == 480
    assert settings.resolved_database_url() == (
        f"sqlite+aiosqlite:///{tmp_path / 'fresh' / 'data' / 'billing.db'}")
    assert (tmp_path / "fresh" / "data").is_dir()
    assert "an-admin-token" not in repr(settings)


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
