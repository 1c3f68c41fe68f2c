"""Rate limits per API key and per account: requests per minute and concurrent
requests, NULL meaning billing's default (docs/billing.md, "Rate limits").

Revision ID: 0003
Revises: 0002
Create Date: 2027-01-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIMIT_COLUMNS = ("requests_per_minute", "max_concurrent_requests")
LIMITED_TABLES = ("accounts", "api_keys")


def upgrade() -> None:
    for table in LIMITED_TABLES:
        # batch_alter_table: SQLite adds nullable columns in place as well.
        with op.batch_alter_table(table) as batch:
            for column in LIMIT_COLUMNS:
                batch.add_column(sa.Column(column, sa.Integer(), nullable=True))


def downgrade() -> None:
    for table in LIMITED_TABLES:
        with op.batch_alter_table(table) as batch:
            for column in LIMIT_COLUMNS:
                batch.drop_column(column)
