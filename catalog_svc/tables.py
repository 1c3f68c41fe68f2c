"""The catalog database schema (SQLAlchemy Core). Migrations in catalog_svc/migrations
create it; this module is what the repository queries against."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

# One row (id 1): the loaded file's version and a revision bumped by every write,
# which replicas poll to know that their snapshot is stale.
catalog_state = sa.Table(
    "catalog_state", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version", sa.String(200), nullable=False),
    sa.Column("revision", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

providers = sa.Table(
    "providers", metadata,
    sa.Column("slug", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("development_only", sa.Boolean, nullable=False),
)

models = sa.Table(
    "models", metadata,
    sa.Column("id", sa.String(200), primary_key=True),
    # Order of the model in the catalog file, kept for listings.
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("created", sa.BigInteger, nullable=False),
    sa.Column("input_modalities", sa.JSON, nullable=False),
    sa.Column("output_modalities", sa.JSON, nullable=False),
    sa.Column("supported_features", sa.JSON, nullable=False),
    sa.Column("watermark", sa.String(32), nullable=False),
    sa.Column("constraints", sa.JSON, nullable=False),
    # Prices as decimal strings, so nothing passes through a binary float.
    sa.Column("cost", sa.JSON, nullable=False),
)

provider_models = sa.Table(
    "provider_models", metadata,
    sa.Column("provider", sa.String(64), sa.ForeignKey("providers.slug"), primary_key=True),
    sa.Column("model_id", sa.String(200), sa.ForeignKey("models.id"), primary_key=True),
    sa.Column("upstream_model_id", sa.String(200), nullable=False),
    sa.Column("region", sa.String(64), nullable=False),
    sa.Column("priority", sa.Integer, nullable=False),
    # The provider_svc adapter family that serves the row; empty for a model
    # that is not an image model.
    sa.Column("adapter", sa.String(64), nullable=False, server_default=""),
    sa.Column("file_active", sa.Boolean, nullable=False),
    # NULL until an operator enables or disables the row; then it wins over the file.
    sa.Column("operator_active", sa.Boolean, nullable=True),
    sa.Column("operator_changed_at", sa.DateTime(timezone=True), nullable=True),
)

audit_events = sa.Table(
    "audit_events", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
)
