"""Entry point: migrate, then serve BillingService and BillingAdminService."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import timedelta
from fractions import Fraction

from billing_svc.domain import LeasePolicy, LimitDefaults
from billing_svc.idempotency import IdempotencyKeys
from billing_svc.jwt_verifier import JwksError, JwtVerifier, load_jwks
from billing_svc.reaper import reap_forever
from billing_svc.service import Billing
from billing_svc.servicer import SERVICE_NAMES, registrars
from billing_svc.settings import BillingSettings
from billing_svc.storage.admin_store import AdminStore
from billing_svc.storage.engine import Database, create_engine
from billing_svc.storage.factory import money_store_for
from billing_svc.storage.usage_store import UsageStore
from billing_svc.storage.idempotency_store import IdempotencyStore
from billing_svc.storage.migrate import upgrade_to_head
from quantized_runtime.database_health import DatabaseHealth
from quantized_runtime.event_loop import run_service
from quantized_runtime.logging import configure_logging
from quantized_runtime.metrics import metrics_served
from quantized_runtime.server import RunningServer, create_server, serve_until_signal
from quantized_runtime.settings import SettingsError, load_settings
from quantized_runtime.tracing import tracing_session
from quantized_runtime.stream_drain import StreamDrain


@dataclass
class RunningBilling:
    server: RunningServer
    database: Database
    billing: Billing
    idempotency: IdempotencyKeys
    reaper: asyncio.Task[None]
    database_health: DatabaseHealth

    @property
    def port(self) -> int:
        return self.server.port

    async def stop(self, grace_seconds: float) -> None:
        """Stop taking calls, end the Ledger streams once their batches in flight
        are answered, let in-flight calls finish, then stop the reaper and the pool."""
        await self.server.stop(grace_seconds)
        await self.stop_background()

    async def stop_background(self) -> None:
        await self.database_health.stop()
        self.reaper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reaper
        await self.database.dispose()


def _jwt_verifier(settings: BillingSettings) -> JwtVerifier:
    try:
        public_keys = load_jwks(settings.jwt_jwks_file) if settings.jwt_jwks_file else []
    except JwksError as exc:
        raise SettingsError(f"configuration error: QUANTIZED_JWT_JWKS_FILE: {exc}") from None
    if settings.jwt_secret or settings.jwt_jwks_file:
        # Without both, a token minted for another service by the same issuer (or
        # by another issuer sharing the key) would be accepted here.
        missing = [name for name, value in (("QUANTIZED_JWT_ISSUER", settings.jwt_issuer),
                                            ("QUANTIZED_JWT_AUDIENCE", settings.jwt_audience)) if not value]
        if missing:
            raise SettingsError(f"configuration error: {' and '.join(missing)} required when JWT is "
                                "enabled (QUANTIZED_JWT_SECRET or QUANTIZED_JWT_JWKS_FILE is set)")
    return JwtVerifier(
        secret=settings.jwt_secret.get_secret_value() if settings.jwt_secret else None,
        public_keys=public_keys, issuer=settings.jwt_issuer, audience=settings.jwt_audience,
        leeway_seconds=settings.jwt_leeway_seconds,
        max_lifetime_seconds=settings.jwt_max_lifetime_seconds)


async def start(settings: BillingSettings) -> RunningBilling:
    """Check the configuration, migrate the database, start serving and reaping."""
    if settings.admin_token is None:
        raise SettingsError("configuration error: QUANTIZED_ADMIN_TOKEN is required "
                            "(the token that billing's admin calls must present)")
    verifier = _jwt_verifier(settings)
    database = Database(create_engine(settings.resolved_database_url(),
                                      settings.database_pool_size))
    database_health = DatabaseHealth("billing", database.engine)
    try:
        await upgrade_to_head(database.engine)
        lease_policy = LeasePolicy(share=Fraction(settings.lease_share),
                                   ttl=timedelta(seconds=settings.lease_ttl_seconds))
        billing = Billing(money_store_for(database, lease_policy), AdminStore(database),
                          UsageStore(database), verifier,
                          timedelta(seconds=settings.hold_ttl_seconds),
                          limit_defaults=LimitDefaults(key=settings.default_key_limits(),
                                                       account=settings.default_account_limits()))
        idempotency = IdempotencyKeys(IdempotencyStore(database))
        drain = StreamDrain()
        server = await create_server(
            settings.listen, registrars(billing, idempotency, settings.admin_token.get_secret_value(),
                                       drain, database_health.guard),
            SERVICE_NAMES, settings.max_message_bytes, drainers=[drain.drain],
            tls=settings.tls_files(), reflection_enabled=settings.reflection,
            health_address=settings.health_listen)
    except BaseException:
        await database.dispose()
        raise
    # Every billing call needs the database, so every health name follows it.
    database_health.start(server, ("", *SERVICE_NAMES))
    reaper = asyncio.create_task(reap_forever(billing, idempotency, settings.reaper_interval_seconds),
                                 name="billing-hold-reaper")
    return RunningBilling(server, database, billing, idempotency, reaper, database_health)


async def _serve(settings: BillingSettings) -> None:
    with metrics_served(settings.metrics_listen, "billing"):
        running = await start(settings)
        await serve_until_signal(running.server, settings.shutdown_grace_seconds,
                                 on_stop=running.stop_background, name="billing")


def main() -> None:
    settings = load_settings(BillingSettings)
    configure_logging(settings.log_level)
    with tracing_session("quantized-billing", settings):
        run_service(_serve(settings))


if __name__ == "__main__":
    main()
