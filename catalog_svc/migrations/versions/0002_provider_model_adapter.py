"""Provider-model rows name the adapter family that serves them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-20
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing rows get their adapter from the catalog file at the next seed or reload.
    op.add_column("provider_models", sa.Column("adapter", sa.String(64), nullable=False, server_default=""))


def downgrade() -> None:
    op.drop_column("provider_models", "adapter")
