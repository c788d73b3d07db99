"""Customers (a projection of contacts, loyalty tiers and purchases), codes, referrals,
rewards, fingerprints and versioned programmes.

Revision ID: referrals_0002
Revises: referrals_0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "referrals_0002"
down_revision = "referrals_0001"
branch_labels = None
depends_on = None

SCHEMA = "referrals"


def _at(name: str, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "customers",
        sa.Column("customer_id", sa.Uuid, primary_key=True),
        sa.Column("status", sa.Text, nullable=False, server_default="active"),
        sa.Column("email_key", sa.Text),
        sa.Column("phone_key", sa.Text),
        sa.Column("tier", sa.Text),
        sa.Column("merged_into", sa.Uuid),
        _at("signed_up_at"),
        _at("updated_at", nullable=False),
        sa.CheckConstraint(
            "status IN ('active', 'merged', 'erased')", name="ck_customers_status_known"
        ),
        schema=SCHEMA,
    )
    op.create_index("ix_customers_email_key", "customers", ["email_key"], schema=SCHEMA)
    op.create_index("ix_customers_phone_key", "customers", ["phone_key"], schema=SCHEMA)
    op.create_table(
        "codes",
        sa.Column("code", sa.Text, primary_key=True),
        sa.Column("customer_id", sa.Uuid, nullable=False),
        _at("created_at", nullable=False),
        _at("replaced_at"),
        sa.CheckConstraint("code = upper(code)", name="ck_codes_code_upper"),
        schema=SCHEMA,
    )
    op.create_index("ix_codes_customer", "codes", ["customer_id"], schema=SCHEMA)
    op.create_index(
        "uq_codes_current",
        "codes",
        ["customer_id"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text("replaced_at IS NULL"),
    )
    op.create_table(
        "programmes",
        sa.Column("version", sa.Integer, sa.Identity(), primary_key=True),
        _at("starts_at", nullable=False),
        _at("ends_at"),
        sa.Column("rules", JSONB, nullable=False),
        sa.Column("created_by", sa.Text),
        _at("created_at", nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "referrals",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("referrer_id", sa.Uuid, nullable=False),
        sa.Column("referee_id", sa.Uuid, nullable=False),
        sa.Column("code", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("flag_reasons", sa.ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("programme_version", sa.Integer),
        _at("attributed_at", nullable=False),
        sa.Column("purchase_id", sa.Uuid),
        _at("qualified_at"),
        _at("closed_at"),
        sa.Column("note", sa.Text),
        sa.Column("reviewed_by", sa.Text),
        _at("reviewed_at"),
        _at("created_at", nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'flagged', 'qualified', 'unqualified', 'expired',"
            " 'rejected', 'reversed')",
            name="ck_referrals_status_known",
        ),
        sa.CheckConstraint("source IN ('signup', 'late')", name="ck_referrals_source_known"),
        schema=SCHEMA,
    )
    # One referrer per referee: the first valid attribution wins.
    op.create_index("uq_referrals_referee", "referrals", ["referee_id"], unique=True, schema=SCHEMA)
    op.create_index(
        "ix_referrals_referrer", "referrals", ["referrer_id", "attributed_at"], schema=SCHEMA
    )
    op.create_index("ix_referrals_status", "referrals", ["status", "id"], schema=SCHEMA)
    op.create_table(
        "rewards",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("referral_id", sa.Uuid, nullable=False),
        sa.Column("customer_id", sa.Uuid, nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("points", sa.BigInteger, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        _at("rewarded_at", nullable=False),
        _at("reversed_at"),
        sa.CheckConstraint("role IN ('referrer', 'referee')", name="ck_rewards_role_known"),
        sa.CheckConstraint("status IN ('rewarded', 'reversed')", name="ck_rewards_status_known"),
        sa.CheckConstraint("points > 0", name="ck_rewards_points_positive"),
        sa.UniqueConstraint("referral_id", "role", name="uq_rewards_referral_role"),
        schema=SCHEMA,
    )
    op.create_index("ix_rewards_customer", "rewards", ["customer_id", "rewarded_at"], schema=SCHEMA)
    op.create_table(
        "purchases",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("customer_id", sa.Uuid, nullable=False),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("total_minor", sa.BigInteger, nullable=False),
        sa.Column("refunded_minor", sa.BigInteger, nullable=False, server_default="0"),
        _at("purchased_at", nullable=False),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_purchases_customer", "purchases", ["customer_id", "purchased_at"], schema=SCHEMA
    )
    op.create_table(
        "refunds",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("purchase_id", sa.Uuid, nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        _at("refunded_at", nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "fingerprints",
        sa.Column("customer_id", sa.Uuid, primary_key=True),
        sa.Column("kind", sa.Text, primary_key=True),
        sa.Column("value", sa.Text, primary_key=True),
        _at("seen_at", nullable=False),
        sa.CheckConstraint("kind IN ('device', 'payment')", name="ck_fingerprints_kind_known"),
        schema=SCHEMA,
    )
    op.create_index("ix_fingerprints_value", "fingerprints", ["kind", "value"], schema=SCHEMA)


def downgrade() -> None:
    for table in (
        "fingerprints",
        "refunds",
        "purchases",
        "rewards",
        "referrals",
        "programmes",
        "codes",
        "customers",
    ):
        op.drop_table(table, schema=SCHEMA)
