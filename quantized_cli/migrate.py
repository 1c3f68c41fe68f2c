"""`quantized migrate catalog|billing`: bring the service's database to the newest
schema and exit. It is the migration `quantized serve` runs before it listens (the
same function, under the same lock), on its own: a Kubernetes init container runs it
so that a failed migration stops the rollout before a new pod starts."""

from __future__ import annotations

import argparse

from quantized_runtime.event_loop import run_service
from quantized_runtime.logging import configure_logging
from quantized_runtime.settings import load_settings


async def _migrate_catalog() -> None:
    # Imported lazily, as `quantized serve` does, so each command loads one service's code.
    from sqlalchemy.ext.asyncio import create_async_engine

    from catalog_svc.migrate import upgrade_to_head
    from catalog_svc.settings import CatalogSettings

    settings = load_settings(CatalogSettings)
    configure_logging(settings.log_level)
    engine = create_async_engine(settings.resolved_database_url())
    try:
        await upgrade_to_head(engine)
    finally:
        await engine.dispose()


async def _migrate_billing() -> None:
    from billing_svc.settings import BillingSettings
    from billing_svc.storage.engine import create_engine
    from billing_svc.storage.migrate import upgrade_to_head

    settings = load_settings(BillingSettings)
    configure_logging(settings.log_level)
    engine = create_engine(settings.resolved_database_url(), settings.database_pool_size)
    try:
        await upgrade_to_head(engine)
    finally:
        await engine.dispose()


MIGRATIONS = {"catalog": _migrate_catalog, "billing": _migrate_billing}


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("migrate", help="migrate a service's database to the newest schema and exit")
    parser.add_argument("service", choices=sorted(MIGRATIONS))
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    run_service(MIGRATIONS[args.service]())
    return 0
