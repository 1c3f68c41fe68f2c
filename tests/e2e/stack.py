"""The four services started in-process (one event loop on a background thread), wired
to the fake upstreams, so plain synchronous tests can drive them with real clients:
the openai SDK, httpx, curl, and generated gRPC stubs. The internal plane runs
mutual TLS with the dev stack's certificates, as in production. Administration goes
through the real admin RPCs with the runtime's `call`, on the stack's own loop,
presenting the operator's certificate."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from billing_svc.main import start as start_billing
from billing_svc.settings import BillingSettings
from catalog_svc.main import start as start_catalog
from catalog_svc.settings import CatalogSettings
from edge.main import start as start_edge
from edge.settings import EdgeSettings
from provider_svc.main import start as start_provider
from provider_svc.settings import ProviderSettings
from quantized.billing.v1 import billing_pb2, billing_pb2_grpc
from quantized.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from quantized_runtime.channels import open_channel
from quantized_runtime.client import call
from tests.fake_upstreams import FakeBedrock, FakeGoogle, FakeOpenAI
from tests.tls import Pki, tls_fields

ADMIN_TOKEN = "e2e-admin-token-0123456789abcdef"
ADMIN_METADATA = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
ADMIN_CALL_TIMEOUT_SECONDS = 10
AUTH_CACHE_TTL_SECONDS = 1.0
CATALOG_CACHE_TTL_SECONDS = 1.0


@dataclass
class Account:
    account_id: str
    api_key: str
    key_id: str


class Stack:
    def __init__(self, data_dir: Path, openai: FakeOpenAI, bedrock: FakeBedrock, google: FakeGoogle, *,
                 billing_overrides: dict[str, Any] | None = None,
                 edge_overrides: dict[str, Any] | None = None) -> None:
        self.data_dir = data_dir
        # Settings on top of the stack's own (a billing database URL, an edge's Redis).
        self.billing_overrides = billing_overrides or {}
        self.edge_overrides = edge_overrides or {}
        self.openai, self.bedrock, self.google = openai, bedrock, google
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="e2e-stack", daemon=True)
        self.services: list[Any] = []
        self.pki = Pki.create(data_dir / "tls")

    def run(self, coroutine: Coroutine) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(120)

    def start(self) -> Stack:
        self.thread.start()
        self.run(self._start())
        return self

    async def _start(self) -> None:
        common = {"listen": "127.0.0.1:0", "data_dir": self.data_dir, "admin_token": ADMIN_TOKEN}
        certificates = self.pki.files
        self.catalog_settings = CatalogSettings(**common, **tls_fields(certificates["catalog"]),
                                                enable_sandbox=True)
        self.catalog = await start_catalog(self.catalog_settings)
        self.billing_settings = BillingSettings(**common, **tls_fields(certificates["billing"]),
                                                **self.billing_overrides)
        self.billing = await start_billing(self.billing_settings)
        self.provider_settings = ProviderSettings(
            **tls_fields(certificates["provider"]),
            listen="127.0.0.1:0", upstream_retries=0, upstream_timeout_seconds=5,
            openai_base_url=self.openai.base_url, openai_api_key=self.openai.api_key,
            bedrock_endpoint_url=self.bedrock.url,
            gemini_base_url=self.google.base_url, gemini_api_key=self.google.gemini_api_key,
            vertex_base_url=self.google.base_url, vertex_api_key=self.google.vertex_api_key,
            # The tests enable catalog rows the shipped file leaves off; the fakes serve them all.
            allowed_models=["openai/*", "bedrock/*", "gemini/*", "sandbox/*"])
        self.provider = await start_provider(self.provider_settings)
        self.edge_settings = EdgeSettings(
            **tls_fields(certificates["edge"]),
            host="127.0.0.1", port=0, listen="127.0.0.1:0",
            catalog_addr=f"127.0.0.1:{self.catalog.port}",
            billing_addr=f"127.0.0.1:{self.billing.port}",
            provider_addr=f"127.0.0.1:{self.provider.port}",
            request_timeout_seconds=20,
            auth_cache_ttl_seconds=AUTH_CACHE_TTL_SECONDS,
            catalog_cache_ttl_seconds=CATALOG_CACHE_TTL_SECONDS,
            **self.edge_overrides)
        self.edge = await start_edge(self.edge_settings)
        self.services = [self.edge, self.provider, self.billing, self.catalog]
        # A rolled service comes back on the same port, so these channels outlive it.
        self.admin_channels = [
            open_channel(f"127.0.0.1:{self.billing.port}", tls=self.pki.operator, peer="billing"),
            open_channel(f"127.0.0.1:{self.catalog.port}", tls=self.pki.operator, peer="catalog")]
        self.billing_admin = billing_pb2_grpc.BillingAdminServiceStub(self.admin_channels[0])
        self.catalog_admin = catalog_pb2_grpc.CatalogAdminServiceStub(self.admin_channels[1])

    def add_edge(self, **overrides: Any) -> Any:
        """Another edge replica on the same services (the stack's edge settings, with `overrides`)."""
        async def add() -> Any:
            edge = await start_edge(self.edge_settings.model_copy(update=overrides))
            self.services.insert(0, edge)
            return edge
        return self.run(add())

    def restart_edge(self) -> None:
        """The stack's edge stopped and started again, on new ports (nothing of it survives in memory)."""
        async def restart() -> Any:
            await self.edge.stop(0)
            successor = await start_edge(self.edge_settings)
            self.services[self.services.index(self.edge)] = successor
            return successor
        self.edge = self.run(restart())

    def roll_billing(self, grace_seconds: float) -> None:
        """A rolling restart: a second billing on the same port and database, then
        the first stops as on SIGTERM."""
        self.billing = self._roll(self.billing, start_billing(self._on_port(self.billing_settings, self.billing)),
                                  grace_seconds)

    def roll_provider(self, grace_seconds: float) -> None:
        """A rolling restart of provider_svc, as roll_billing."""
        self.provider = self._roll(self.provider, start_provider(self._on_port(self.provider_settings, self.provider)),
                                   grace_seconds)

    @staticmethod
    def _on_port(settings: Any, running: Any) -> Any:
        return settings.model_copy(update={"listen": f"127.0.0.1:{running.port}"})

    def _roll(self, old: Any, starting: Coroutine, grace_seconds: float) -> Any:
        async def roll() -> Any:
            successor = await starting
            self.services[self.services.index(old)] = successor
            await old.stop(grace_seconds)
            return successor
        return self.run(roll())

    def stop(self) -> None:
        async def stop_all() -> None:
            for channel in self.admin_channels:
                await channel.close()
            for service in self.services:
                await service.stop(0)
        self.run(stop_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.edge.http_port}/v1"

    @property
    def edge_grpc_addr(self) -> str:
        return f"127.0.0.1:{self.edge.grpc_port}"

    # Administration through the real admin RPCs. They wait for a connection: a
    # test may have just restarted the service they reach.
    def _admin(self, method: Any, request: Any) -> Any:
        return self.run(call(method, request, timeout=ADMIN_CALL_TIMEOUT_SECONDS,
                             metadata=ADMIN_METADATA, wait_for_ready=True))

    def create_account(self, credits: int = 0, unlimited: bool = False, name: str = "e2e") -> Account:
        reply = self._admin(self.billing_admin.CreateAccount,
                            billing_pb2.CreateAccountRequest(name=name, credits_micro_credits=credits,
                                                             unlimited=unlimited))
        return Account(reply.account.account_id, reply.api_key, reply.key.key_id)

    def account(self, account_id: str) -> billing_pb2.GetAccountResponse:
        return self._admin(self.billing_admin.GetAccount,
                           billing_pb2.GetAccountRequest(account_id=account_id))

    def revoke_key(self, key_id: str) -> None:
        self._admin(self.billing_admin.RevokeApiKey, billing_pb2.RevokeApiKeyRequest(key_id=key_id))

    def set_active(self, provider: str, model: str, active: bool) -> None:
        self._admin(self.catalog_admin.SetProviderModelActive,
                    catalog_pb2.SetProviderModelActiveRequest(provider=provider, model_id=model,
                                                              is_active=active, actor="e2e"))
