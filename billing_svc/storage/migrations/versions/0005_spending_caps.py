"""Spending caps per API key: a daily and a total cap (NULL: none), the key's
spend in all and on its last day of spend, and the key of each request hold
(docs/billing.md, "Spending caps").

Revision ID: 0005
Revises: 0003
Create Date: 2027-01-12
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # batch_alter_table: SQLite adds nullable or defaulted columns in place as well.
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("daily_cap", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("total_cap", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("spent_total", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("spent_on_day", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("spend_day", sa.Date(), nullable=True))
    with op.batch_alter_table("holds") as batch:
        batch.add_column(sa.Column("api_key_id", sa.String(40), nullable=True))
    op.create_index("ix_holds_api_key_id_status", "holds", ["api_key_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_holds_api_key_id_status", table_name="holds")
    with op.batch_alter_table("holds") as batch:
        batch.drop_column("api_key_id")
    with op.batch_alter_table("api_keys") as batch:
        for column in ("spend_day", "spent_on_day", "spent_total", "total_cap", "daily_cap"):
            batch.drop_column(column)
