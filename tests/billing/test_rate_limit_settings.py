"""Rate limits stored per key and per account, set through BillingAdminService and
handed to the edge on Authenticate with billing's defaults filled in."""

from __future__ import annotations

from quantized.billing.v1 import billing_pb2 as pb

from .conftest import BillingClient, StartBilling, expect_error

DEFAULTS = dict(default_key_requests_per_minute=60, default_key_max_concurrent_requests=4,
                default_account_requests_per_minute=600, default_account_max_concurrent_requests=40)


def limits(rpm: int, concurrency: int) -> pb.RateLimits:
    return pb.RateLimits(requests_per_minute=rpm, max_concurrent_requests=concurrency)


async def _client(start_billing: StartBilling) -> BillingClient:
    return await start_billing(**DEFAULTS)


async def test_authenticate_carries_the_defaults_until_an_operator_sets_limits(start_billing) -> None:
    client = await _client(start_billing)
    created = await client.create_account(credits=1_000)
    answer = await client.authenticate(created.api_key)
    assert (answer.key_limits, answer.account_limits) == (limits(60, 4), limits(600, 40))

    key = (await client.admin_call("UpdateApiKeyLimits", pb.UpdateApiKeyLimitsRequest(
        key_id=created.key.key_id, limits=pb.LimitSetting(requests_per_minute=5)))).key
    assert key.limits.requests_per_minute == 5
    assert not key.limits.HasField("max_concurrent_requests")
    account = (await client.admin_call("UpdateAccountLimits", pb.UpdateAccountLimitsRequest(
        account_id=created.account.account_id,
        limits=pb.LimitSetting(requests_per_minute=0, max_concurrent_requests=2)))).account
    assert (account.limits.requests_per_minute, account.limits.max_concurrent_requests) == (0, 2)

    answer = await client.authenticate(created.api_key)
    assert (answer.key_limits, answer.account_limits) == (limits(5, 4), limits(0, 2))
    view = await client.account(created.account.account_id)
    assert view.keys[0].limits.requests_per_minute == 5
    assert view.account.limits.max_concurrent_requests == 2


async def test_use_defaults_clears_what_was_stored(start_billing) -> None:
    client = await _client(start_billing)
    created = await client.create_account()
    await client.admin_call("UpdateApiKeyLimits", pb.UpdateApiKeyLimitsRequest(
        key_id=created.key.key_id, limits=pb.LimitSetting(requests_per_minute=1, max_concurrent_requests=1)))
    key = (await client.admin_call("UpdateApiKeyLimits", pb.UpdateApiKeyLimitsRequest(
        key_id=created.key.key_id, use_defaults=True))).key
    assert not key.limits.HasField("requests_per_minute")
    assert (await client.authenticate(created.api_key)).key_limits == limits(60, 4)


async def test_limit_updates_are_checked_and_need_the_admin_token(start_billing) -> None:
    client = await _client(start_billing)
    created = await client.create_account()
    error = await expect_error(client.admin_call("UpdateApiKeyLimits", pb.UpdateApiKeyLimitsRequest(
        key_id=created.key.key_id, limits=pb.LimitSetting(requests_per_minute=-1))), "INVALID_REQUEST")
    assert error.field == "limits.requests_per_minute"
    await expect_error(client.admin_call("UpdateAccountLimits", pb.UpdateAccountLimitsRequest(
        account_id="acct_nobody", limits=pb.LimitSetting(requests_per_minute=1))), "NOT_FOUND")
    await expect_error(client.call(client.admin.UpdateApiKeyLimits, pb.UpdateApiKeyLimitsRequest(
        key_id=created.key.key_id, limits=pb.LimitSetting(requests_per_minute=1))), "PERMISSION_DENIED")
