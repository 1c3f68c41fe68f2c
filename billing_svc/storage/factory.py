"""Pick the repository for the database behind the engine."""

from __future__ import annotations

from billing_svc.domain import LeasePolicy
from billing_svc.storage.engine import Database
from billing_svc.storage.postgres_repository import PostgresBillingRepository
from billing_svc.storage.repository import BillingRepository
from billing_svc.storage.sqlite_repository import SqliteBillingRepository


def repository_for(database: Database, lease_policy: LeasePolicy) -> BillingRepository:
    """The lease policy goes to the request paths, the only ones with leases."""
    if database.dialect == "postgresql":
        return PostgresBillingRepository(database, lease_policy)
    if database.sqlite is not None:
        return SqliteBillingRepository(database, database.sqlite, lease_policy)
    return BillingRepository(database)
