"""Pick the repository for the database behind the engine."""

from __future__ import annotations

from billing_svc.storage.engine import Database
from billing_svc.storage.postgres_repository import PostgresBillingRepository
from billing_svc.storage.repository import BillingRepository


def repository_for(database: Database) -> BillingRepository:
    if database.dialect == "postgresql":
        return PostgresBillingRepository(database)
    return BillingRepository(database)
