"""`quantized admin key create|update|list` with spending caps, through the real
command against a real billing server: the caps are stored, shown with the
key's spend in `key list` and `account show`, changed one at a time, removed
with 0, and a bad value is refused before anything is sent."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest

from billing_svc.main import start
from billing_svc.settings import BillingSettings
from quantized_runtime.defaults import sqlite_url
from tests.harness import serving

ADMIN_TOKEN = "cli-caps-admin-token-0123456789abcdef"


@pytest.fixture
async def billing_addr(data_dir: str) -> AsyncIterator[str]:
    settings = BillingSettings(listen="127.0.0.1:0", database_url=sqlite_url(data_dir, "billing.db"),
                               data_dir=data_dir, admin_token=ADMIN_TOKEN, reaper_interval_seconds=3600)
    async with serving(start(settings)) as served:
        yield f"127.0.0.1:{served.running.port}"


async def _admin(billing_addr: str, tmp_path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("QUANTIZED_", "XDG_STATE_HOME"))}
    # No dev stack's state file may leak in: the address and token come from here.
    env.update({"QUANTIZED_BILLING_ADDR": billing_addr, "QUANTIZED_ADMIN_TOKEN": ADMIN_TOKEN,
                "XDG_STATE_HOME": str(tmp_path / "state")})
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "quantized_cli", "admin", *args],
        env=env, capture_output=True, text=True, timeout=60)


async def _json(billing_addr: str, tmp_path, *args: str) -> dict:
    done = await _admin(billing_addr, tmp_path, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def test_caps_are_set_shown_and_changed_through_the_cli(billing_addr, tmp_path) -> None:
    account = await _json(billing_addr, tmp_path, "account", "create", "--name", "school",
                          "--credits", "1000000")
    key = await _json(billing_addr, tmp_path, "key", "create", "--account", account["account_id"],
                      "--daily-cap", "250000")
    assert key["caps"] == {"daily_micro_credits": "250000"}

    updated = await _json(billing_addr, tmp_path, "key", "update", key["key_id"], "--total-cap", "900000")
    assert updated["caps"] == {"daily_micro_credits": "250000", "total_micro_credits": "900000"}
    assert updated["spend"] == {"total_micro_credits": "0", "today_micro_credits": "0",
                                "held_micro_credits": "0"}
    # Rate limits and caps in one command; 0 removes the daily cap.
    updated = await _json(billing_addr, tmp_path, "key", "update", key["key_id"], "--rpm", "5",
                          "--daily-cap", "0")
    assert updated["caps"] == {"total_micro_credits": "900000"}
    assert updated["limits"] == {"requests_per_minute": 5}

    listed = await _json(billing_addr, tmp_path, "key", "list", "--account", account["account_id"])
    by_id = {entry["key_id"]: entry for entry in listed["keys"]}
    assert by_id[key["key_id"]]["caps"] == {"total_micro_credits": "900000"}
    assert by_id[account["key_id"]]["caps"] == {}
    shown = await _json(billing_addr, tmp_path, "account", "show", account["account_id"])
    assert {entry["key_id"]: entry["caps"] for entry in shown["keys"]}[key["key_id"]] == {
        "total_micro_credits": "900000"}

    plain = await _admin(billing_addr, tmp_path, "key", "list", "--account", account["account_id"])
    assert plain.returncode == 0 and '"total_micro_credits": "900000"' in plain.stdout

    refused = await _admin(billing_addr, tmp_path, "key", "update", key["key_id"], "--total-cap", "-1")
    assert refused.returncode == 2
    assert "--total-cap" in refused.stderr and "must be zero or a positive whole number" in refused.stderr
