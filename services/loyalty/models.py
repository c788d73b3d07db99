"""Tables of the loyalty schema (SQLAlchemy Core: the ledger is written set-wise)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from shared.pipeline.tables import NAMING_CONVENTION

SCHEMA = "loyalty"
metadata = sa.MetaData(schema=SCHEMA, naming_convention=NAMING_CONVENTION)

members = sa.Table(
    "members",
    metadata,
    sa.Column("customer_id", sa.Uuid, primary_key=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("card_number", sa.Text),
    sa.Column("phone", sa.Text),
    sa.Column("email", sa.Text),
    sa.Column("tier", sa.Text),
    sa.Column("balance", sa.BigInteger, nullable=False),
    sa.Column("debt", sa.BigInteger, nullable=False),
    sa.Column("merged_into", sa.Uuid),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

purchases = sa.Table(
    "purchases",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("customer_id", sa.Uuid, nullable=False),
    sa.Column("store_id", sa.Text, nullable=False),
    sa.Column("order_id", sa.Text, nullable=False),
    sa.Column("currency", sa.Text, nullable=False),
    sa.Column("total_minor", sa.BigInteger, nullable=False),
    sa.Column("refunded_minor", sa.BigInteger, nullable=False),
    sa.Column("lines", JSONB, nullable=False),
    sa.Column("channel", sa.Text, nullable=False),
    sa.Column("purchased_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("points", sa.BigInteger, nullable=False),
    sa.Column("points_reversed", sa.BigInteger, nullable=False),
    sa.Column("rule_version", sa.Integer),
    sa.Column("origin", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

refunds = sa.Table(
    "refunds",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("purchase_id", sa.Uuid, nullable=False),
    sa.Column("amount_minor", sa.BigInteger, nullable=False),
    sa.Column("points", sa.BigInteger, nullable=False),
    sa.Column("refunded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

ledger = sa.Table(
    "ledger",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("customer_id", sa.Uuid, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("points", sa.BigInteger, nullable=False),
    sa.Column("reference", sa.Text),
    sa.Column("reason", sa.Text),
    sa.Column("actor", sa.Text),
    sa.Column("available_at", sa.DateTime(timezone=True)),
    sa.Column("expires_at", sa.DateTime(timezone=True)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

lots = sa.Table(
    "lots",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("customer_id", sa.Uuid, nullable=False),
    sa.Column("ledger_id", sa.BigInteger, nullable=False),
    sa.Column("points", sa.BigInteger, nullable=False),
    sa.Column("remaining", sa.BigInteger, nullable=False),
    sa.Column("available_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True)),
)

lot_consumptions = sa.Table(
    "lot_consumptions",
    metadata,
    sa.Column("ledger_id", sa.BigInteger, primary_key=True),
    sa.Column("lot_id", sa.BigInteger, primary_key=True),
    sa.Column("points", sa.BigInteger, nullable=False),
)

earning_rules = sa.Table(
    "earning_rules",
    metadata,
    sa.Column("version", sa.Integer, sa.Identity(), primary_key=True),
    sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False),
    sa.Column("rules", JSONB, nullable=False),
    sa.Column("created_by", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
