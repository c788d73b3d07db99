"""Tables of the referrals schema (SQLAlchemy Core), mirroring its migrations."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from shared.db.columns import timestamptz
from shared.pipeline.tables import NAMING_CONVENTION

SCHEMA = "referrals"
metadata = sa.MetaData(schema=SCHEMA, naming_convention=NAMING_CONVENTION)


customers = sa.Table(
    "customers",
    metadata,
    sa.Column("customer_id", sa.Uuid, primary_key=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("email_key", sa.Text),
    sa.Column("phone_key", sa.Text),
    sa.Column("tier", sa.Text),
    sa.Column("merged_into", sa.Uuid),
    timestamptz("signed_up_at"),
    timestamptz("updated_at", nullable=False),
)

codes = sa.Table(
    "codes",
    metadata,
    sa.Column("code", sa.Text, primary_key=True),
    sa.Column("customer_id", sa.Uuid, nullable=False),
    timestamptz("created_at", nullable=False),
    timestamptz("replaced_at"),
)

programmes = sa.Table(
    "programmes",
    metadata,
    sa.Column("version", sa.Integer, sa.Identity(), primary_key=True),
    timestamptz("starts_at", nullable=False),
    timestamptz("ends_at"),
    sa.Column("rules", JSONB, nullable=False),
    sa.Column("created_by", sa.Text),
    timestamptz("created_at", nullable=False),
)

referrals = sa.Table(
    "referrals",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("referrer_id", sa.Uuid, nullable=False),
    sa.Column("referee_id", sa.Uuid, nullable=False),
    sa.Column("code", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("flag_reasons", ARRAY(sa.Text), nullable=False),
    sa.Column("programme_version", sa.Integer),
    timestamptz("attributed_at", nullable=False),
    sa.Column("purchase_id", sa.Uuid),
    timestamptz("qualified_at"),
    timestamptz("closed_at"),
    sa.Column("note", sa.Text),
    sa.Column("reviewed_by", sa.Text),
    timestamptz("reviewed_at"),
    timestamptz("created_at", nullable=False),
)

rewards = sa.Table(
    "rewards",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("referral_id", sa.Uuid, nullable=False),
    sa.Column("customer_id", sa.Uuid, nullable=False),
    sa.Column("role", sa.Text, nullable=False),
    sa.Column("points", sa.BigInteger, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    timestamptz("rewarded_at", nullable=False),
    timestamptz("reversed_at"),
)

purchases = sa.Table(
    "purchases",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("customer_id", sa.Uuid, nullable=False),
    sa.Column("currency", sa.Text, nullable=False),
    sa.Column("total_minor", sa.BigInteger, nullable=False),
    sa.Column("refunded_minor", sa.BigInteger, nullable=False),
    timestamptz("purchased_at", nullable=False),
)

refunds = sa.Table(
    "refunds",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("purchase_id", sa.Uuid, nullable=False),
    sa.Column("amount_minor", sa.BigInteger, nullable=False),
    timestamptz("refunded_at", nullable=False),
)

fingerprints = sa.Table(
    "fingerprints",
    metadata,
    sa.Column("customer_id", sa.Uuid, primary_key=True),
    sa.Column("kind", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, primary_key=True),
    timestamptz("seen_at", nullable=False),
)
