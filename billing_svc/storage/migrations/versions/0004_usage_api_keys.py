"""The API key of each usage record, for the usage API's per-key buckets
(docs/api.md, GET /v1/usage); NULL for requests made with a JWT and for the
records written before this revision. The reports read usage_records by
(account_id, created_at), an index since 0001.

Revision ID: 0004
Revises: 0003
Create Date: 2027-01-12
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A nullable column without a constraint: added in place on both databases, so
    # SQLite does not rebuild usage_records (and drop its append-only triggers).
    op.add_column("usage_records", sa.Column("api_key_id", sa.String(40), nullable=True))


def downgrade() -> None:
    op.drop_column("usage_records", "api_key_id")
