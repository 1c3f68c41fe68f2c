"""Pick the repository for the database behind the engine."""

from __future__ import annotations

from billing_svc.storage.engine import Database
from billing_svc.storage.postgres_repository import PostgresBillingRepository
from billing_svc.storage.repository import BillingRepository
from billing_svc.storage.sqlite_repository import SqliteBillingRepository


def repository_for(database: Database) -> BillingRepository:
    if database.dialect == "postgresql":
        return PostgresBillingRepository(database)
    if database.sqlite is not None:
        return SqliteBillingRepository(database, database.sqlite)
    return BillingRepository(database)
