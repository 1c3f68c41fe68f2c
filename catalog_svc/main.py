"""Entry point: `quantized serve catalog` (or `python -m catalog_svc.main`)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from quantized_runtime.database_health import DatabaseHealth
from quantized_runtime.event_loop import run_service
from quantized_runtime.logging import configure_logging
from quantized_runtime.metrics import metrics_served
from quantized_runtime.server import RunningServer, create_server, serve_until_signal
from quantized_runtime.settings import load_settings
from quantized_runtime.tracing import tracing_session

from catalog_svc.catalog_file import CatalogFileError
from catalog_svc.service import CatalogCore
from catalog_svc.migrate import upgrade_to_head
from catalog_svc.pricing import Pricer
from catalog_svc.servicer import CATALOG_ADMIN_SERVICE_NAME, SERVICE_NAMES, registrars
from catalog_svc.settings import CatalogSettings
from catalog_svc.storage import CatalogRepository


@dataclass
class RunningCatalog:
    server: RunningServer
    core: CatalogCore
    engine: AsyncEngine
    database_health: DatabaseHealth

    @property
    def port(self) -> int:
        return self.server.port

    async def stop(self, grace_seconds: float) -> None:
        await self.server.stop(grace_seconds)
        await self.release()

    async def release(self) -> None:
        await self.database_health.stop()
        await self.core.stop()
        await self.engine.dispose()


async def start(settings: CatalogSettings) -> RunningCatalog:
    """Migrate, seed from the catalog file, then serve. A malformed file raises CatalogFileError."""
    engine = create_async_engine(settings.resolved_database_url())
    database_health = DatabaseHealth("catalog", engine)
    try:
        await upgrade_to_head(engine)
        core = CatalogCore(CatalogRepository(engine), settings.file, Pricer(settings.credits_per_usd),
                           sandbox_enabled=settings.enable_sandbox,
                           refresh_seconds=settings.refresh_seconds)
        await core.initialise()
    except BaseException:
        await engine.dispose()
        raise
    try:
        server = await create_server(
            settings.listen, registrars(core, settings.admin_token.get_secret_value(),
                                        database_health.guard),
            SERVICE_NAMES, settings.max_message_bytes,
            tls=settings.tls_files(), reflection_enabled=settings.reflection,
            health_address=settings.health_listen)
    except BaseException:
        await engine.dispose()
        raise
    core.start_polling()
    # The request path (CatalogService, and the overall "" status) answers from the
    # in-memory snapshot, which no one can change while the database is down; only
    # the admin service needs the database.
    database_health.start(server, (CATALOG_ADMIN_SERVICE_NAME,))
    return RunningCatalog(server, core, engine, database_health)


async def _serve(settings: CatalogSettings) -> None:
    with metrics_served(settings.metrics_listen, "catalog"):
        running = await start(settings)
        await serve_until_signal(running.server, settings.shutdown_grace_seconds,
                                 on_stop=running.release, name="catalog")


def main() -> None:
    settings = load_settings(CatalogSettings)
    configure_logging(settings.log_level)
    try:
        with tracing_session("quantized-catalog", settings):
            run_service(_serve(settings))
    except CatalogFileError as exc:
        raise SystemExit(f"catalog file error: {exc}") from None


if __name__ == "__main__":
    main()
