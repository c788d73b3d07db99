"""Tables of the loyalty schema (SQLAlchemy Core: the ledger is written set-wise)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

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
    sa.Column("tier_since", sa.DateTime(timezone=True)),
    sa.Column("tier_review_at", sa.DateTime(timezone=True)),
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

rewards = sa.Table(
    "rewards",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("description", sa.Text),
    sa.Column("points_cost", sa.BigInteger, nullable=False),
    sa.Column("valid_days", sa.Integer, nullable=False),
    sa.Column("stock", sa.BigInteger),
    sa.Column("per_member_limit", sa.Integer),
    sa.Column("tiers", ARRAY(sa.Text)),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

redemptions = sa.Table(
    "redemptions",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("customer_id", sa.Uuid, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("reward_id", sa.Uuid),
    sa.Column("points", sa.BigInteger, nullable=False),
    sa.Column("amount_minor", sa.BigInteger),
    sa.Column("currency", sa.Text),
    sa.Column("voucher_code", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("store_id", sa.Text),
    sa.Column("order_ref", sa.Text),
    sa.Column("ledger_entry_id", sa.BigInteger),
    sa.Column("reserved_until", sa.DateTime(timezone=True)),
    sa.Column("valid_until", sa.DateTime(timezone=True)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("settled_at", sa.DateTime(timezone=True)),
)

tiers = sa.Table(
    "tiers",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("rank", sa.Integer, nullable=False),
    sa.Column("basis", sa.Text, nullable=False),
    sa.Column("threshold", sa.BigInteger, nullable=False),
    sa.Column("window_days", sa.Integer, nullable=False),
    sa.Column("earn_multiplier", sa.Numeric(8, 4), nullable=False),
    sa.Column("discount_percent", sa.Numeric(5, 2), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

tier_changes = sa.Table(
    "tier_changes",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("customer_id", sa.Uuid, nullable=False),
    sa.Column("previous_tier", sa.Text),
    sa.Column("tier", sa.Text),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

stamp_card_definitions = sa.Table(
    "stamp_card_definitions",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("skus", ARRAY(sa.Text)),
    sa.Column("categories", ARRAY(sa.Text)),
    sa.Column("stamps_required", sa.Integer, nullable=False),
    sa.Column("reward_description", sa.Text, nullable=False),
    sa.Column("voucher_valid_days", sa.Integer, nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

stamp_cards = sa.Table(
    "stamp_cards",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("customer_id", sa.Uuid, nullable=False),
    sa.Column("definition_id", sa.Uuid, nullable=False),
    sa.Column("stamps", sa.Integer, nullable=False),
    sa.Column("completed_at", sa.DateTime(timezone=True)),
    sa.Column("voucher_code", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

stamp_entries = sa.Table(
    "stamp_entries",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("card_id", sa.Uuid, nullable=False),
    sa.Column("purchase_id", sa.Uuid, nullable=False),
    sa.Column("refund_id", sa.Uuid),
    sa.Column("stamps", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

expiry_notices = sa.Table(
    "expiry_notices",
    metadata,
    sa.Column("lot_id", sa.BigInteger, primary_key=True),
    sa.Column("notified_at", sa.DateTime(timezone=True), nullable=False),
)
