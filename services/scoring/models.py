"""Tables of the scoring schema (SQLAlchemy Core), mirroring its migrations."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from shared.db.columns import timestamptz
from shared.pipeline.tables import NAMING_CONVENTION

SCHEMA = "scoring"
metadata = sa.MetaData(schema=SCHEMA, naming_convention=NAMING_CONVENTION)


customers = sa.Table(
    "customers",
    metadata,
    sa.Column("customer_id", sa.Uuid, primary_key=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("merged_into", sa.Uuid),
    timestamptz("signed_up_at"),
    sa.Column("tier", sa.Text),
    sa.Column("locale", sa.Text),
    sa.Column("points_balance", sa.BigInteger),
    timestamptz("points_balance_at"),
    timestamptz("first_purchase_at"),
    timestamptz("last_purchase_at"),
    sa.Column("first_day", sa.Date),
    sa.Column("last_day", sa.Date),
    sa.Column("orders", sa.Integer, nullable=False),
    sa.Column("purchase_days", sa.Integer, nullable=False),
    sa.Column("spend_minor", sa.BigInteger, nullable=False),
    sa.Column("repeat_spend_minor", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.Text),
    sa.Column("stores", JSONB, nullable=False),
    sa.Column("channels", JSONB, nullable=False),
    sa.Column("fit_id", sa.BigInteger),
    sa.Column("p_alive", sa.Float),
    sa.Column("churn_risk", sa.Float),
    sa.Column("churn_band", sa.Text),
    sa.Column("expected_purchases", sa.Float),
    sa.Column("clv", sa.Float),
    sa.Column("rfm_r", sa.SmallInteger),
    sa.Column("rfm_f", sa.SmallInteger),
    sa.Column("rfm_m", sa.SmallInteger),
    sa.Column("rfm_segment", sa.Text),
    timestamptz("scored_at"),
    sa.Column("published", JSONB),
    timestamptz("updated_at", nullable=False),
)

purchases = sa.Table(
    "purchases",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("customer_id", sa.Uuid, nullable=False),
    sa.Column("day", sa.Date, nullable=False),
    sa.Column("currency", sa.Text, nullable=False),
    sa.Column("total_minor", sa.BigInteger, nullable=False),
    sa.Column("refunded_minor", sa.BigInteger, nullable=False),
    sa.Column("store_id", sa.Text),
    sa.Column("channel", sa.Text, nullable=False),
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

fits = sa.Table(
    "fits",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("params", JSONB, nullable=False),
    sa.Column("standard_errors", JSONB, nullable=False),
    sa.Column("log_likelihood", sa.Float, nullable=False),
    sa.Column("time_unit", sa.Text, nullable=False),
    sa.Column("customers", sa.Integer, nullable=False),
    sa.Column("diagnostics", JSONB, nullable=False),
    sa.Column("trigger", sa.Text, nullable=False),
    timestamptz("as_of", nullable=False),
    timestamptz("created_at", nullable=False),
)

segments = sa.Table(
    "segments",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("name", sa.Text, nullable=False, unique=True),
    sa.Column("rule", sa.Text, nullable=False),
    sa.Column("description", sa.Text),
    timestamptz("created_at", nullable=False),
    timestamptz("updated_at", nullable=False),
)

segment_members = sa.Table(
    "segment_members",
    metadata,
    sa.Column("segment_id", sa.Uuid, primary_key=True),
    sa.Column("customer_id", sa.Uuid, primary_key=True),
    timestamptz("entered_at", nullable=False),
)
