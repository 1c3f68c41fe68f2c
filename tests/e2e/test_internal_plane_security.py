"""The internal plane refuses whoever is not allowed (issue 16): every method of
every internal service, through a real channel, with no certificate, a certificate
from another CA, an expired one, and the wrong identity. Each is refused before any
work: no balance moves, no hold or key appears, no catalog row changes and the
upstream sees no request."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import message

from quantized.billing.v1 import billing_pb2
from quantized.catalog.v1 import catalog_pb2
from quantized.common.v1 import images_pb2
from quantized.images.v1 import images_pb2 as public_images_pb2
from quantized.images.v1 import images_pb2_grpc as public_images_pb2_grpc
from quantized.provider.v1 import provider_pb2
from quantized_runtime.tls import TlsFiles, channel_credentials, server_name
from tests.e2e.stack import ADMIN_METADATA, Account, Stack

BALANCE = 50_000_000
CALL_TIMEOUT_SECONDS = 5


@dataclass(frozen=True)
class Target:
    service: str  # whose server: catalog, billing, provider
    method: str  # /pkg.Service/Method
    request: Callable[[Account], message.Message]
    streaming: bool = False


def _generate(_account: Account) -> provider_pb2.GenerateRequest:
    return provider_pb2.GenerateRequest(
        provider="openai", model_id="gpt-image-1", upstream_model_id="gpt-image-1", adapter="openai",
        request_id="req_intruder", params=images_pb2.GenerationParams(prompt="spend their key", n=1))


TARGETS = [
    Target("catalog", "/quantized.catalog.v1.CatalogService/ResolveRoute",
           lambda a: catalog_pb2.ResolveRouteRequest(model="gpt-image-1")),
    Target("catalog", "/quantized.catalog.v1.CatalogService/QuotePrice",
           lambda a: catalog_pb2.QuotePriceRequest(model_id="dall-e-3", size="1024x1024", n=1)),
    Target("catalog", "/quantized.catalog.v1.CatalogService/ListModels", lambda a: catalog_pb2.ListModelsRequest()),
    Target("catalog", "/quantized.catalog.v1.CatalogAdminService/SetProviderModelActive",
           lambda a: catalog_pb2.SetProviderModelActiveRequest(provider="openai", model_id="gpt-image-1",
                                                               is_active=False)),
    Target("catalog", "/quantized.catalog.v1.CatalogAdminService/ListCatalog",
           lambda a: catalog_pb2.ListCatalogRequest()),
    Target("catalog", "/quantized.catalog.v1.CatalogAdminService/ReloadCatalog",
           lambda a: catalog_pb2.ReloadCatalogRequest()),
    Target("catalog", "/quantized.catalog.v1.CatalogAdminService/ListAuditEvents",
           lambda a: catalog_pb2.ListAuditEventsRequest()),
    Target("billing", "/quantized.billing.v1.BillingService/Authenticate",
           lambda a: billing_pb2.AuthenticateRequest(token=a.api_key)),
    Target("billing", "/quantized.billing.v1.BillingService/Ledger",
           lambda a: billing_pb2.LedgerRequest(batch_id=1, operations=[billing_pb2.LedgerOperation(
               reserve=billing_pb2.ReserveRequest(account_id=a.account_id, amount_micro_credits=BALANCE,
                                                  request_id="req_intruder_stream"))]),
           streaming=True),
    Target("billing", "/quantized.billing.v1.BillingService/GetUsage",
           lambda a: billing_pb2.GetUsageRequest(account_id=a.account_id)),
    Target("billing", "/quantized.billing.v1.BillingService/ClaimIdempotencyKey",
           lambda a: billing_pb2.ClaimIdempotencyKeyRequest(
               account_id=a.account_id, key="intruder-key", fingerprint=bytes(32), owner="req_intruder",
               running_seconds=60)),
    Target("billing", "/quantized.billing.v1.BillingService/CompleteIdempotencyKey",
           lambda a: billing_pb2.CompleteIdempotencyKeyRequest(
               account_id=a.account_id, key="intruder-key", owner="req_intruder",
               state=billing_pb2.IDEMPOTENCY_STATE_TOO_LARGE, retain_seconds=60)),
    Target("billing", "/quantized.billing.v1.BillingService/ReleaseIdempotencyKey",
           lambda a: billing_pb2.ReleaseIdempotencyKeyRequest(account_id=a.account_id, key="intruder-key",
                                                              owner="req_intruder")),
    Target("billing", "/quantized.billing.v1.BillingAdminService/CreateAccount",
           lambda a: billing_pb2.CreateAccountRequest(name="intruder", unlimited=True)),
    Target("billing", "/quantized.billing.v1.BillingAdminService/CreateApiKey",
           lambda a: billing_pb2.CreateApiKeyRequest(account_id=a.account_id)),
    Target("billing", "/quantized.billing.v1.BillingAdminService/RevokeApiKey",
           lambda a: billing_pb2.RevokeApiKeyRequest(key_id=a.key_id)),
    Target("billing", "/quantized.billing.v1.BillingAdminService/GrantCredits",
           lambda a: billing_pb2.GrantCreditsRequest(account_id=a.account_id, amount_micro_credits=BALANCE)),
    Target("billing", "/quantized.billing.v1.BillingAdminService/UpdateApiKeyLimits",
           lambda a: billing_pb2.UpdateApiKeyLimitsRequest(
               key_id=a.key_id, limits=billing_pb2.LimitSetting(requests_per_minute=1))),
    Target("billing", "/quantized.billing.v1.BillingAdminService/UpdateAccountLimits",
           lambda a: billing_pb2.UpdateAccountLimitsRequest(
               account_id=a.account_id, limits=billing_pb2.LimitSetting(requests_per_minute=1))),
    Target("billing", "/quantized.billing.v1.BillingAdminService/UpdateApiKeyCaps",
           lambda a: billing_pb2.UpdateApiKeyCapsRequest(
               key_id=a.key_id, caps=billing_pb2.SpendingCaps(daily_micro_credits=1))),
    Target("billing", "/quantized.billing.v1.BillingAdminService/GetAccount",
           lambda a: billing_pb2.GetAccountRequest(account_id=a.account_id)),
    Target("billing", "/quantized.billing.v1.BillingAdminService/GetAccountUsage",
           lambda a: billing_pb2.GetAccountUsageRequest(account_id=a.account_id)),
    Target("provider", "/quantized.provider.v1.ProviderService/GenerateStream",
           lambda a: provider_pb2.GenerateStreamRequest(call_id=1, request=_generate(a), timeout_seconds=5),
           streaming=True),
]


def test_the_targets_cover_every_internal_method():
    covered = {target.method for target in TARGETS}
    every = {f"/{service.full_name}/{method.name}"
             for descriptor in (catalog_pb2.DESCRIPTOR, billing_pb2.DESCRIPTOR, provider_pb2.DESCRIPTOR)
             for service in descriptor.services_by_name.values() for method in service.methods}
    assert covered == every


def _is_admin(target: Target) -> bool:
    return "AdminService/" in target.method


# Credentials a caller may hold: None is no certificate at all (plaintext).
CREDENTIALS: dict[str, Callable[[Stack, Target], TlsFiles | None]] = {
    "no certificate": lambda stack, target: None,
    "another CA": lambda stack, target: stack.pki.from_another_ca("operator/mallory" if _is_admin(target) else "edge"),
    "expired": lambda stack, target: stack.pki.expired("operator/mallory" if _is_admin(target) else "edge"),
}


@dataclass(frozen=True)
class Snapshot:
    account: Any
    openai_requests: int
    audit_events: int
    catalog_row_active: bool


def _snapshot(stack: Stack, account: Account) -> Snapshot:
    view = stack.account(account.account_id)
    audit = stack._admin(stack.catalog_admin.ListAuditEvents, catalog_pb2.ListAuditEventsRequest(limit=1000))
    catalog = stack._admin(stack.catalog_admin.ListCatalog, catalog_pb2.ListCatalogRequest())
    row = next(r for r in catalog.provider_models if (r.provider, r.model_id) == ("openai", "gpt-image-1"))
    return Snapshot(view, len(stack.openai.requests), len(audit.events), row.is_active)


@pytest.fixture(scope="module")
def victim(stack: Stack) -> Account:
    return stack.create_account(credits=BALANCE, name="victim")


def _attempt(stack: Stack, target: Target, account: Account, tls: TlsFiles | None) -> grpc.StatusCode:
    """Make the call as the holder of TLS (the admin token included, as a thief of
    it would) and return its status code."""
    running = {"catalog": stack.catalog, "billing": stack.billing, "provider": stack.provider}[target.service]
    address = f"127.0.0.1:{running.port}"
    request = target.request(account)

    async def attempt() -> grpc.StatusCode:
        if tls is None:
            channel = grpc.aio.insecure_channel(address)
        else:
            channel = grpc.aio.secure_channel(address, channel_credentials(tls), options=[
                ("grpc.ssl_target_name_override", server_name(target.service))])
        async with channel:
            options = {"request_serializer": type(request).SerializeToString,
                       "response_deserializer": lambda data: data}
            if target.streaming:
                call = channel.stream_stream(target.method, **options)(
                    iter([request]), timeout=CALL_TIMEOUT_SECONDS, metadata=ADMIN_METADATA)
                return await call.code()
            try:
                await channel.unary_unary(target.method, **options)(
                    request, timeout=CALL_TIMEOUT_SECONDS, metadata=ADMIN_METADATA)
            except grpc.aio.AioRpcError as refused:
                return refused.code()
            return grpc.StatusCode.OK

    return stack.run(attempt())


@pytest.mark.parametrize("credential", sorted(CREDENTIALS))
@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.method.rsplit(".", 1)[1])
def test_a_caller_without_a_valid_certificate_is_refused_at_the_handshake(stack, victim, target, credential):
    before = _snapshot(stack, victim)
    # The TLS handshake fails, so no call reaches the server's code: gRPC reports
    # the connection as unavailable.
    assert _attempt(stack, target, victim, CREDENTIALS[credential](stack, target)) == grpc.StatusCode.UNAVAILABLE
    assert _snapshot(stack, victim) == before


def _wrong_identities(target: Target) -> list[str]:
    if _is_admin(target):
        return ["edge", "billing"]  # a service's certificate is no operator's
    if target.service == "provider":
        return ["billing", "operator/mallory"]
    return ["provider", "operator/mallory"]  # provider calling billing or catalog; an operator on the money path


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.method.rsplit(".", 1)[1])
def test_a_valid_certificate_of_the_wrong_identity_is_refused_before_any_work(stack, victim, target):
    running = {"catalog": stack.catalog, "billing": stack.billing, "provider": stack.provider}[target.service]
    refusals = running.server.authorization.refused_calls
    for identity in _wrong_identities(target):
        before = _snapshot(stack, victim)
        counted = refusals[(target.method, identity)]
        assert _attempt(stack, target, victim, stack.pki.issue(identity)) == grpc.StatusCode.PERMISSION_DENIED
        assert _snapshot(stack, victim) == before
        assert refusals[(target.method, identity)] == counted + 1


def test_the_allowed_identity_gets_through(stack, victim):
    """The refusals above are the table's doing: the same channel set-up with the
    right certificate reaches the service."""
    authenticate = next(t for t in TARGETS if t.method.endswith("/Authenticate"))
    assert _attempt(stack, authenticate, victim, stack.pki.files["edge"]) == grpc.StatusCode.OK
    grant = next(t for t in TARGETS if t.method.endswith("/GetAccount"))
    assert _attempt(stack, grant, victim, stack.pki.operator) == grpc.StatusCode.OK


def test_a_refusal_is_logged_with_method_peer_and_identity(stack, victim, caplog):
    target = next(t for t in TARGETS if t.method.endswith("BillingService/Authenticate"))
    with caplog.at_level("WARNING", logger="quantized.authorization"):
        _attempt(stack, target, victim, stack.pki.issue("provider"))
    fields = next(record.fields for record in caplog.records if record.getMessage() == "call refused")
    assert fields["method"] == target.method and fields["identity"] == "provider"
    assert fields["code"] == "PERMISSION_DENIED" and fields["peer"].startswith("ipv4:127.0.0.1:")
    assert victim.api_key not in caplog.text


def test_the_public_grpc_port_takes_no_message_above_the_http_body_limit(stack, victim):
    too_big = public_images_pb2.GenerateRequest(model="sandbox-image-1", prompt="x" * (1024 * 1024 + 1))

    async def send() -> grpc.StatusCode:
        async with grpc.aio.insecure_channel(stack.edge_grpc_addr) as channel:
            try:
                await public_images_pb2_grpc.ImagesServiceStub(channel).Generate(
                    too_big, timeout=CALL_TIMEOUT_SECONDS, metadata=[("authorization", f"Bearer {victim.api_key}")])
            except grpc.aio.AioRpcError as refused:
                return refused.code()
        return grpc.StatusCode.OK

    before = _snapshot(stack, victim)
    assert stack.run(send()) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _snapshot(stack, victim) == before
