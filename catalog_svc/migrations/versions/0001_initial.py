"""Initial catalog schema.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    state = op.create_table(
        "catalog_state",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version", sa.String(200), nullable=False),
        sa.Column("revision", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.bulk_insert(state, [{"id": 1, "version": "", "revision": 0, "updated_at": datetime.now(UTC)}])
    op.create_table(
        "providers",
        sa.Column("slug", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("development_only", sa.Boolean, nullable=False),
    )
    op.create_table(
        "models",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("created", sa.BigInteger, nullable=False),
        sa.Column("input_modalities", sa.JSON, nullable=False),
        sa.Column("output_modalities", sa.JSON, nullable=False),
        sa.Column("supported_features", sa.JSON, nullable=False),
        sa.Column("watermark", sa.String(32), nullable=False),
        sa.Column("constraints", sa.JSON, nullable=False),
        sa.Column("cost", sa.JSON, nullable=False),
    )
    op.create_table(
        "provider_models",
        sa.Column("provider", sa.String(64), sa.ForeignKey("providers.slug"), primary_key=True),
        sa.Column("model_id", sa.String(200), sa.ForeignKey("models.id"), primary_key=True),
        sa.Column("upstream_model_id", sa.String(200), nullable=False),
        sa.Column("region", sa.String(64), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("file_active", sa.Boolean, nullable=False),
        sa.Column("operator_active", sa.Boolean, nullable=True),
        sa.Column("operator_changed_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
    )
    op.create_index("ix_audit_events_time", "audit_events", ["time"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_time", "audit_events")
    op.drop_table("audit_events")
    op.drop_table("provider_models")
    op.drop_table("models")
    op.drop_table("providers")
    op.drop_table("catalog_state")
