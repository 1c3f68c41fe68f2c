"""Pick the money path written for the database behind the engine."""

from __future__ import annotations

from billing_svc.domain import LeasePolicy
from billing_svc.storage.engine import Database
from billing_svc.storage.money_store import MoneyStore
from billing_svc.storage.postgres_money_store import PostgresMoneyStore
from billing_svc.storage.sqlite_money_store import SqliteMoneyStore


def money_store_for(database: Database, lease_policy: LeasePolicy) -> MoneyStore:
    """The lease policy goes to the money path, the only one with leases."""
    if database.sqlite is not None:
        return SqliteMoneyStore(database.sqlite, lease_policy)
    return PostgresMoneyStore(database, lease_policy)
