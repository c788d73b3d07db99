"""Rewards catalogue and redemptions, tiers, stamp cards, expiry notices, audit of tiers.

Revision ID: loyalty_0003
Revises: loyalty_0002
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

revision = "loyalty_0003"
down_revision = "loyalty_0002"
branch_labels = None
depends_on = None

SCHEMA = "loyalty"


def _created() -> sa.Column[object]:
    return sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    )


def upgrade() -> None:
    op.add_column("members", sa.Column("tier_since", sa.DateTime(timezone=True)), schema=SCHEMA)
    op.add_column("members", sa.Column("tier_review_at", sa.DateTime(timezone=True)), schema=SCHEMA)
    op.create_table(
        "rewards",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("points_cost", sa.BigInteger, nullable=False),
        sa.Column("valid_days", sa.Integer, nullable=False, server_default="30"),
        sa.Column("stock", sa.BigInteger),
        sa.Column("per_member_limit", sa.Integer),
        sa.Column("tiers", ARRAY(sa.Text)),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
        _created(),
        sa.CheckConstraint("points_cost > 0", name="ck_rewards_cost_positive"),
        sa.CheckConstraint("stock IS NULL OR stock >= 0", name="ck_rewards_stock_not_negative"),
        schema=SCHEMA,
    )
    op.create_table(
        "redemptions",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("customer_id", sa.Uuid, nullable=False, index=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("reward_id", sa.Uuid),
        sa.Column("points", sa.BigInteger, nullable=False),
        sa.Column("amount_minor", sa.BigInteger),
        sa.Column("currency", sa.Text),
        sa.Column("voucher_code", sa.Text, nullable=False, unique=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("store_id", sa.Text),
        sa.Column("order_ref", sa.Text),
        sa.Column("ledger_entry_id", sa.BigInteger),
        sa.Column("reserved_until", sa.DateTime(timezone=True)),
        sa.Column("valid_until", sa.DateTime(timezone=True)),
        _created(),
        sa.Column("settled_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("kind IN ('reward', 'payment')", name="ck_redemptions_kind"),
        sa.CheckConstraint(
            "status IN ('reserved', 'confirmed', 'released', 'expired')",
            name="ck_redemptions_status",
        ),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_redemptions_reserved_until",
        "redemptions",
        ["reserved_until"],
        schema=SCHEMA,
        postgresql_where=sa.text("status = 'reserved'"),
    )
    op.create_table(
        "tiers",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("rank", sa.Integer, nullable=False, unique=True),
        sa.Column("basis", sa.Text, nullable=False),
        sa.Column("threshold", sa.BigInteger, nullable=False),
        sa.Column("window_days", sa.Integer, nullable=False),
        sa.Column("earn_multiplier", sa.Numeric(8, 4), nullable=False, server_default="1"),
        sa.Column("discount_percent", sa.Numeric(5, 2), nullable=False, server_default="0"),
        _created(),
        sa.CheckConstraint("basis IN ('spend', 'points')", name="ck_tiers_basis"),
        schema=SCHEMA,
    )
    op.create_table(
        "tier_changes",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("customer_id", sa.Uuid, nullable=False, index=True),
        sa.Column("previous_tier", sa.Text),
        sa.Column("tier", sa.Text),
        sa.Column("reason", sa.Text, nullable=False),
        _created(),
        schema=SCHEMA,
    )
    op.create_table(
        "stamp_card_definitions",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("skus", ARRAY(sa.Text)),
        sa.Column("categories", ARRAY(sa.Text)),
        sa.Column("stamps_required", sa.Integer, nullable=False),
        sa.Column("reward_description", sa.Text, nullable=False),
        sa.Column("voucher_valid_days", sa.Integer, nullable=False, server_default="30"),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
        _created(),
        sa.CheckConstraint("stamps_required > 0", name="ck_stamp_card_definitions_required"),
        schema=SCHEMA,
    )
    op.create_table(
        "stamp_cards",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("customer_id", sa.Uuid, nullable=False, index=True),
        sa.Column("definition_id", sa.Uuid, nullable=False),
        sa.Column("stamps", sa.Integer, nullable=False, server_default="0"),
        sa.Column("completed_at", sa.DateTime(timezone=True)),
        sa.Column("voucher_code", sa.Text, unique=True),
        _created(),
        schema=SCHEMA,
    )
    op.create_index(
        "uq_stamp_cards_open",
        "stamp_cards",
        ["customer_id", "definition_id"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text("completed_at IS NULL"),
    )
    op.create_table(
        "stamp_entries",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("card_id", sa.Uuid, nullable=False, index=True),
        sa.Column("purchase_id", sa.Uuid, nullable=False, index=True),
        sa.Column("refund_id", sa.Uuid),
        sa.Column("stamps", sa.Integer, nullable=False),
        _created(),
        schema=SCHEMA,
    )
    op.create_table(
        "expiry_notices",
        sa.Column("lot_id", sa.BigInteger, primary_key=True),
        sa.Column("notified_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )


def downgrade() -> None:
    for table in (
        "expiry_notices",
        "stamp_entries",
        "stamp_cards",
        "stamp_card_definitions",
        "tier_changes",
        "tiers",
        "redemptions",
        "rewards",
    ):
        op.drop_table(table, schema=SCHEMA)
    op.drop_column("members", "tier_review_at", schema=SCHEMA)
    op.drop_column("members", "tier_since", schema=SCHEMA)
