"""Accounts, API keys, holds, the append-only ledger and usage records.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPEND_ONLY_TABLES = ("ledger", "usage_records")
# Frozen copies of the schema's types, so later edits to schema.py never rewrite history.
UTCDateTime = sa.DateTime(timezone=True)
RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("unlimited", sa.Boolean(), nullable=False),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.Column("held", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.CheckConstraint("unlimited OR balance >= 0",
                           name="ck_accounts_balance_covers_limited"),
        sa.CheckConstraint("held >= 0", name="ck_accounts_held_not_negative"),
        sa.PrimaryKeyConstraint("id", name="pk_accounts"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("revoked_at", UTCDateTime, nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name="fk_api_keys_account_id_accounts"),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("secret_hash", name="uq_api_keys_secret_hash"),
    )
    op.create_index("ix_api_keys_account_id", "api_keys", ["account_id"])
    op.create_table(
        "holds",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("request_id", sa.String(200), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("charged", sa.BigInteger(), nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.Column("closed_at", UTCDateTime, nullable=True),
        sa.CheckConstraint("amount >= 0", name="ck_holds_amount_not_negative"),
        sa.CheckConstraint("charged IS NULL OR (charged >= 0 AND charged <= amount)",
                           name="ck_holds_charged_within_hold"),
        sa.CheckConstraint("status IN ('open', 'settled', 'released', 'expired')",
                           name="ck_holds_known_status"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name="fk_holds_account_id_accounts"),
        sa.PrimaryKeyConstraint("id", name="pk_holds"),
        sa.UniqueConstraint("account_id", "request_id", name="uq_holds_account_id_request_id"),
    )
    op.create_index("ix_holds_status_expires_at", "holds", ["status", "expires_at"])
    op.create_table(
        "ledger",
        sa.Column("id", RowId, autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("hold_id", sa.String(40), nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.CheckConstraint("kind IN ('grant', 'hold', 'settle', 'release', 'expire')",
                           name="ck_ledger_known_kind"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name="fk_ledger_account_id_accounts"),
        sa.ForeignKeyConstraint(["hold_id"], ["holds.id"], name="fk_ledger_hold_id_holds"),
        sa.PrimaryKeyConstraint("id", name="pk_ledger"),
    )
    op.create_index("ix_ledger_account_id", "ledger", ["account_id"])
    op.create_table(
        "usage_records",
        sa.Column("id", RowId, autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("hold_id", sa.String(40), nullable=False),
        sa.Column("request_id", sa.String(200), nullable=False),
        sa.Column("model_id", sa.String(200), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("images", sa.Integer(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=True),
        sa.Column("output_tokens", sa.BigInteger(), nullable=True),
        sa.Column("total_tokens", sa.BigInteger(), nullable=True),
        sa.Column("megapixels", sa.Float(), nullable=True),
        sa.Column("credits", sa.BigInteger(), nullable=False),
        sa.Column("end_user", sa.String(256), nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name="fk_usage_records_account_id_accounts"),
        sa.ForeignKeyConstraint(["hold_id"], ["holds.id"],
                                name="fk_usage_records_hold_id_holds"),
        sa.PrimaryKeyConstraint("id", name="pk_usage_records"),
        sa.UniqueConstraint("hold_id", name="uq_usage_records_hold_id"),
    )
    op.create_index("ix_usage_records_account_id_created_at", "usage_records",
                    ["account_id", "created_at"])
    _forbid_update_and_delete()


def _forbid_update_and_delete() -> None:
    """The ledger and usage records are append-only, enforced by the database itself."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE FUNCTION reject_change_to_append_only() RETURNS trigger "
                   "LANGUAGE plpgsql AS $$ BEGIN "
                   "RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$")
        for table in APPEND_ONLY_TABLES:
            op.execute(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                       "FOR EACH ROW EXECUTE FUNCTION reject_change_to_append_only()")
        return
    for table in APPEND_ONLY_TABLES:
        for event in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER {table}_no_{event.lower()} BEFORE {event} ON {table} "
                       f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END")


def downgrade() -> None:
    for table in ("usage_records", "ledger", "holds", "api_keys", "accounts"):
        op.drop_table(table)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION reject_change_to_append_only()")
