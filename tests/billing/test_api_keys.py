"""API keys through a real billing server: issued once, stored hashed,
authenticated, revoked; admin calls need the admin token."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from billing_svc.storage.schema import api_keys
from quantized.billing.v1 import billing_pb2 as pb

from .conftest import BillingClient, expect_error, read_books


@pytest.fixture
def database_url(sqlite_database_url) -> str:
    """Identity does not depend on the database engine: SQLite only, to stay fast."""
    return sqlite_database_url


async def stored_keys(database_url: str) -> list[tuple[str, str, str]]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(api_keys.c.id, api_keys.c.prefix,
                                              api_keys.c.secret_hash))).all()
        return [tuple(row) for row in rows]
    finally:
        await engine.dispose()


async def test_a_new_account_gets_a_key_that_authenticates(client: BillingClient,
                                                           database_url) -> None:
    created = await client.create_account(credits=1_000_000, name="Springfield High")
    assert created.account.name == "Springfield High"
    assert created.account.balance_micro_credits == 1_000_000
    assert created.api_key.startswith("sk-quantized-")
    # At least 128 bits: 32 random bytes in URL-safe base64 after the prefix.
    assert len(created.api_key.removeprefix("sk-quantized-")) >= 43
    assert created.key.prefix == created.api_key[:len(created.key.prefix)]
    assert created.api_key != created.key.prefix

    identity = await client.authenticate(created.api_key)
    assert identity.account_id == created.account.account_id
    assert identity.key_id == created.key.key_id
    assert not identity.unlimited


async def test_only_a_hash_of_the_key_is_stored(client: BillingClient, database_url) -> None:
    created = await client.create_account()
    [(key_id, prefix, secret_hash)] = await stored_keys(database_url)
    assert key_id == created.key.key_id
    assert secret_hash == hashlib.sha256(created.api_key.encode()).hexdigest()
    assert created.api_key.removeprefix(prefix)  # the prefix is only the start
    view = await client.account(created.account.account_id)
    assert created.api_key not in str(view)


async def test_keys_are_listed_without_secrets_and_revoked_keys_stop_working(
        client: BillingClient) -> None:
    created = await client.create_account()
    account_id = created.account.account_id
    second = await client.admin_call("CreateApiKey", pb.CreateApiKeyRequest(
        account_id=account_id))
    assert second.api_key != created.api_key
    assert (await client.authenticate(second.api_key)).key_id == second.key.key_id

    revoked = await client.admin_call("RevokeApiKey", pb.RevokeApiKeyRequest(
        key_id=created.key.key_id))
    assert revoked.key.revoked
    error = await expect_error(client.authenticate(created.api_key), "UNAUTHENTICATED")
    assert created.api_key not in error.message
    # The other key is untouched; revoking again is harmless.
    assert (await client.authenticate(second.api_key)).account_id == account_id
    again = await client.admin_call("RevokeApiKey", pb.RevokeApiKeyRequest(
        key_id=created.key.key_id))
    assert again.key.revoked

    view = await client.account(account_id)
    assert {(k.key_id, k.revoked) for k in view.keys} == {
        (created.key.key_id, True), (second.key.key_id, False)}
    assert created.api_key not in str(view) and second.api_key not in str(view)


@pytest.mark.parametrize("token", [
    "", "   ", "sk-quantized-", "sk-quantized-not-a-real-key-0123456789abcdefghijklmn",
    "Bearer nonsense", "not.a.jwt", "x" * 9000,
])
async def test_unknown_or_malformed_tokens_are_unauthenticated_without_echo(
        client: BillingClient, token: str) -> None:
    error = await expect_error(client.authenticate(token), "UNAUTHENTICATED")
    if token.strip():
        assert token.strip() not in error.message


async def test_unknown_ids_in_admin_calls_are_not_found(client: BillingClient) -> None:
    for name, request in [
        ("CreateApiKey", pb.CreateApiKeyRequest(account_id="acct_missing")),
        ("RevokeApiKey", pb.RevokeApiKeyRequest(key_id="key_missing")),
        ("GrantCredits", pb.GrantCreditsRequest(account_id="acct_missing",
                                                amount_micro_credits=1)),
        ("GetAccount", pb.GetAccountRequest(account_id="acct_missing")),
    ]:
        await expect_error(client.admin_call(name, request), "NOT_FOUND")


@pytest.mark.parametrize(("request_", "field"), [
    (pb.CreateAccountRequest(name=" ", credits_micro_credits=1), "name"),
    (pb.CreateAccountRequest(name="x" * 201), "name"),
    (pb.CreateAccountRequest(name="n", credits_micro_credits=-1), "credits_micro_credits"),
    (pb.CreateAccountRequest(name="n", credits_micro_credits=5, unlimited=True),
     "credits_micro_credits"),
])
async def test_invalid_new_accounts_are_rejected(client: BillingClient, request_,
                                                 field) -> None:
    error = await expect_error(client.admin_call("CreateAccount", request_), "INVALID_REQUEST")
    assert error.field == field


ADMIN_CALLS = [
    ("CreateAccount", lambda account_id, key_id: pb.CreateAccountRequest(
        name="intruder", credits_micro_credits=10**9)),
    ("CreateApiKey", lambda account_id, key_id: pb.CreateApiKeyRequest(account_id=account_id)),
    ("RevokeApiKey", lambda account_id, key_id: pb.RevokeApiKeyRequest(key_id=key_id)),
    ("GrantCredits", lambda account_id, key_id: pb.GrantCreditsRequest(
        account_id=account_id, amount_micro_credits=10**9)),
    ("GetAccount", lambda account_id, key_id: pb.GetAccountRequest(account_id=account_id)),
]


@pytest.mark.parametrize("metadata", [
    (), (("authorization", "Bearer wrong-token"),), (("authorization", ""),),
], ids=["missing", "wrong", "empty"])
async def test_admin_calls_need_the_admin_token(client: BillingClient, database_url,
                                                metadata) -> None:
    created = await client.create_account(credits=1_000)
    account_id = created.account.account_id
    before = await read_books(database_url, account_id)
    for name, build in ADMIN_CALLS:
        error = await expect_error(
            client.call(getattr(client.admin, name), build(account_id, created.key.key_id),
                        metadata=metadata), "PERMISSION_DENIED")
        assert "wrong-token" not in error.message
    assert await read_books(database_url, account_id) == before
    assert (await client.authenticate(created.api_key)).account_id == account_id
    view = await client.account(account_id)
    assert [k.revoked for k in view.keys] == [False]
