"""The billing tables. Migrations in `migrations/versions` create exactly these
(a test compares them); amounts are BIGINT micro-credits."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from quantized_runtime.clock import as_utc

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid alias).
RowId = BigInteger().with_variant(Integer(), "sqlite")

ID_LENGTH = 40


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on both databases.

    SQLite keeps no offset, so values are normalised to UTC before writing; the
    fixed-width text form then also compares in time order.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return as_utc(value)


accounts = Table(
    "accounts", metadata,
    Column("id", String(ID_LENGTH), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("unlimited", Boolean, nullable=False),
    # Available credits: the sum of the account's ledger rows. Open holds and the
    # unspent part of open leases are already subtracted.
    Column("balance", BigInteger, nullable=False),
    # The total of open holds and of the unspent part of open leases, kept beside
    # the balance so a read needs no sum.
    Column("held", BigInteger, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # Rate limits the edge enforces (0: none); NULL takes billing's default.
    Column("requests_per_minute", Integer, nullable=True),
    Column("max_concurrent_requests", Integer, nullable=True),
    # No check keeps a limited balance at zero or above: a late charge (a lease's
    # charge that arrived after the lease closed) is applied, never dropped, and
    # may take it below zero. Reserve and AcquireLease debit only what is there.
    CheckConstraint("held >= 0", name="held_not_negative"),
)

api_keys = Table(
    "api_keys", metadata,
    Column("id", String(ID_LENGTH), primary_key=True),
    Column("account_id", String(ID_LENGTH), ForeignKey("accounts.id"), nullable=False, index=True),
    # The first characters of the key, for display and support only.
    Column("prefix", String(32), nullable=False),
    # SHA-256 of the whole key, hex: the lookup column of Authenticate.
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    # As on accounts: 0 is no limit, NULL takes billing's default.
    Column("requests_per_minute", Integer, nullable=True),
    Column("max_concurrent_requests", Integer, nullable=True),
    # Spending caps (docs/billing.md, "Spending caps"): NULL is no cap.
    Column("daily_cap", BigInteger, nullable=True),
    Column("total_cap", BigInteger, nullable=True),
    # What the key was charged (Settles and Charges naming it), in all and on
    # `spend_day` (a UTC date; another day's figure counts as 0 today).
    Column("spent_total", BigInteger, nullable=False, server_default="0"),
    Column("spent_on_day", BigInteger, nullable=False, server_default="0"),
    Column("spend_day", Date, nullable=True),
)

holds = Table(
    "holds", metadata,
    Column("id", String(ID_LENGTH), primary_key=True),
    Column("account_id", String(ID_LENGTH), ForeignKey("accounts.id"), nullable=False),
    Column("request_id", String(200), nullable=False),
    # request: one request's worst case (Reserve, then Settle or Release);
    # lease: credits an edge spends down with Charges (docs/billing.md).
    Column("kind", String(16), nullable=False, server_default="request"),
    # The edge instance holding a lease, for audit; NULL for request holds.
    Column("holder", String(200), nullable=True),
    # Everything set aside: a lease's acquisition plus its extensions.
    Column("amount", BigInteger, nullable=False),
    # open -> settled | released | expired; the last three are final. A lease
    # is never settled: it is released (returned) or expires.
    Column("status", String(16), nullable=False),
    # A request hold's: NULL until it closes. A lease's: charged so far, from 0.
    Column("charged", BigInteger, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("closed_at", UTCDateTime, nullable=True),
    # The API key of a request hold (NULL for a JWT caller and for leases): its
    # open holds count against the key's caps, its Settle toward its spend.
    Column("api_key_id", String(ID_LENGTH), nullable=True),
    # A retried Reserve finds its hold instead of placing a second one.
    UniqueConstraint("account_id", "request_id"),
    CheckConstraint("amount >= 0", name="amount_not_negative"),
    CheckConstraint("charged IS NULL OR (charged >= 0 AND charged <= amount)",
                    name="charged_within_hold"),
    CheckConstraint("status IN ('open', 'settled', 'released', 'expired')", name="known_status"),
    CheckConstraint("kind IN ('request', 'lease')", name="known_kind"),
    Index("ix_holds_status_expires_at", "status", "expires_at"),
    Index("ix_holds_api_key_id_status", "api_key_id", "status"),
)

ledger = Table(
    "ledger", metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("account_id", String(ID_LENGTH), ForeignKey("accounts.id"), nullable=False, index=True),
    # grant | hold | settle | release | expire | charge (see docs/billing.md).
    Column("kind", String(16), nullable=False),
    # Signed: credits into (+) or out of (-) the account's available balance.
    Column("amount", BigInteger, nullable=False),
    Column("hold_id", String(ID_LENGTH), ForeignKey("holds.id"), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    CheckConstraint("kind IN ('grant', 'hold', 'settle', 'release', 'expire', 'charge')",
                    name="known_kind"),
)

usage_records = Table(
    "usage_records", metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("account_id", String(ID_LENGTH), ForeignKey("accounts.id"), nullable=False),
    # The settled hold, or the lease a Charge was taken from; NULL for a Charge
    # taken from the balance (an unlimited account's, or a late one).
    Column("hold_id", String(ID_LENGTH), ForeignKey("holds.id"), nullable=True),
    Column("request_id", String(200), nullable=False),
    Column("model_id", String(200), nullable=False),
    Column("provider", String(64), nullable=False),
    Column("images", Integer, nullable=False),
    Column("input_tokens", BigInteger, nullable=True),
    Column("output_tokens", BigInteger, nullable=True),
    Column("total_tokens", BigInteger, nullable=True),
    # A measurement, not money: a float is fine here.
    Column("megapixels", Float, nullable=True),
    Column("credits", BigInteger, nullable=False),
    Column("end_user", String(256), nullable=True),
    # The API key the request was made with; NULL for a JWT caller. A label like
    # model_id, not a foreign key: a Charge is never refused over it.
    Column("api_key_id", String(ID_LENGTH), nullable=True),
    # A Charge its lease could not take, applied to the balance instead.
    Column("late", Boolean, nullable=False, server_default=false()),
    Column("created_at", UTCDateTime, nullable=False),
    # One record per request: a Settle's, or a Charge's (a repeated Charge finds it).
    UniqueConstraint("account_id", "request_id"),
    Index("ix_usage_records_account_id_created_at", "account_id", "created_at"),
)

# The edge's Idempotency-Key claims and stored answers, when it has no Redis
# (docs/billing.md, "Idempotency keys"): one row per (account, key).
idempotency_keys = Table(
    "idempotency_keys", metadata,
    Column("account_id", String(ID_LENGTH), ForeignKey("accounts.id"), nullable=False),
    # As the caller sent it: 1 to 255 printable ASCII characters.
    Column("key", String(255), nullable=False),
    # SHA-256 of the request the key came with.
    Column("fingerprint", LargeBinary(32), nullable=False),
    # The attempt that claimed the key (the edge's request id).
    Column("owner", String(200), nullable=False),
    # running -> completed | too_large | failed_after_generation; a released claim is deleted.
    Column("state", String(32), nullable=False),
    # completed: the serialized quantized.images.v1.GenerateResponse to replay.
    Column("response", LargeBinary, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    # running: when another attempt may take the key over; otherwise when the row is forgotten.
    Column("expires_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("account_id", "key"),
    CheckConstraint("state IN ('running', 'completed', 'too_large', 'failed_after_generation')",
                    name="known_state"),
    Index("ix_idempotency_keys_expires_at", "expires_at"),
)
