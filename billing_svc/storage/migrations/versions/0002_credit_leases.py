"""Credit leases: holds of kind 'lease' with a holder, the 'charge' ledger kind,
limited balances that a late charge may take below zero, and one usage record
per (account, request id) instead of one per hold.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the schema's types, so later edits to schema.py never rewrite history.
UTCDateTime = sa.DateTime(timezone=True)
RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

HOLD_KINDS_CHECK = "kind IN ('request', 'lease')"
LEDGER_KINDS_CHECK = "kind IN ('grant', 'hold', 'settle', 'release', 'expire', 'charge')"
# Children after their parents: the order the tables are filled again on SQLite.
REBUILT_ON_SQLITE = ("accounts", "holds", "ledger", "usage_records")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _alter_in_place()
    else:
        _rebuild_sqlite_tables()


def _alter_in_place() -> None:
    op.drop_constraint("ck_accounts_balance_covers_limited", "accounts", type_="check")
    op.add_column("holds", sa.Column("kind", sa.String(16), nullable=False,
                                     server_default="request"))
    op.add_column("holds", sa.Column("holder", sa.String(200), nullable=True))
    op.create_check_constraint("ck_holds_known_kind", "holds", HOLD_KINDS_CHECK)
    op.drop_constraint("ck_ledger_known_kind", "ledger", type_="check")
    op.create_check_constraint("ck_ledger_known_kind", "ledger", LEDGER_KINDS_CHECK)
    op.drop_constraint("uq_usage_records_hold_id", "usage_records", type_="unique")
    op.alter_column("usage_records", "hold_id", nullable=True)
    op.add_column("usage_records", sa.Column("late", sa.Boolean(), nullable=False,
                                             server_default=sa.false()))
    op.create_unique_constraint("uq_usage_records_account_id_request_id", "usage_records",
                                ["account_id", "request_id"])


def _rebuild_sqlite_tables() -> None:
    """SQLite changes a CHECK or UNIQUE constraint only by building the table
    again. Other tables' foreign keys point at accounts and holds, and
    PRAGMA foreign_keys cannot change inside the migration's transaction, so the
    checks are deferred to the commit instead: it still fails on any reference
    left dangling once every table is filled again."""
    bind = op.get_bind()
    op.execute("PRAGMA defer_foreign_keys = ON")
    copied_columns: dict[str, list[str]] = {}
    for name in reversed(REBUILT_ON_SQLITE):
        copied_columns[name] = [row[1] for row in
                                bind.exec_driver_sql(f"PRAGMA table_info({name})")]
        op.execute(f"CREATE TEMP TABLE {name}_0001 AS SELECT * FROM {name}")
        # Dropping a table drops its indexes and triggers and fires none of them.
        op.execute(f"DROP TABLE {name}")
    _create_tables()
    for name in REBUILT_ON_SQLITE:
        columns = ", ".join(copied_columns[name])
        op.execute(f"INSERT INTO {name} ({columns}) SELECT {columns} FROM temp.{name}_0001")
        op.execute(f"DROP TABLE temp.{name}_0001")
    op.create_index("ix_holds_status_expires_at", "holds", ["status", "expires_at"])
    op.create_index("ix_ledger_account_id", "ledger", ["account_id"])
    op.create_index("ix_usage_records_account_id_created_at", "usage_records",
                    ["account_id", "created_at"])
    for table in ("ledger", "usage_records"):
        for event in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER {table}_no_{event.lower()} BEFORE {event} ON {table} "
                       f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END")


def _create_tables() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("unlimited", sa.Boolean(), nullable=False),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.Column("held", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.CheckConstraint("held >= 0", name="ck_accounts_held_not_negative"),
        sa.PrimaryKeyConstraint("id", name="pk_accounts"),
    )
    op.create_table(
        "holds",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("request_id", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False, server_default="request"),
        sa.Column("holder", sa.String(200), nullable=True),
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
        sa.CheckConstraint(HOLD_KINDS_CHECK, name="ck_holds_known_kind"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name="fk_holds_account_id_accounts"),
        sa.PrimaryKeyConstraint("id", name="pk_holds"),
        sa.UniqueConstraint("account_id", "request_id", name="uq_holds_account_id_request_id"),
    )
    op.create_table(
        "ledger",
        sa.Column("id", RowId, autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("hold_id", sa.String(40), nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.CheckConstraint(LEDGER_KINDS_CHECK, name="ck_ledger_known_kind"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name="fk_ledger_account_id_accounts"),
        sa.ForeignKeyConstraint(["hold_id"], ["holds.id"], name="fk_ledger_hold_id_holds"),
        sa.PrimaryKeyConstraint("id", name="pk_ledger"),
    )
    op.create_table(
        "usage_records",
        sa.Column("id", RowId, autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("hold_id", sa.String(40), nullable=True),
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
        sa.Column("late", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name="fk_usage_records_account_id_accounts"),
        sa.ForeignKeyConstraint(["hold_id"], ["holds.id"],
                                name="fk_usage_records_hold_id_holds"),
        sa.PrimaryKeyConstraint("id", name="pk_usage_records"),
        sa.UniqueConstraint("account_id", "request_id",
                            name="uq_usage_records_account_id_request_id"),
    )


def downgrade() -> None:
    # Lease rows, 'charge' ledger rows and balances below zero have no form in 0001.
    raise NotImplementedError("billing migration 0002 (credit leases) cannot be undone")
