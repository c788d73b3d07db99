"""Per-customer state kept from events, the customers' scores, stored fits, and segments.

Revision ID: scoring_0002
Revises: scoring_0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "scoring_0002"
down_revision = "scoring_0001"
branch_labels = None
depends_on = None

SCHEMA = "scoring"


def _at(name: str, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "customers",
        sa.Column("customer_id", sa.Uuid, primary_key=True),
        sa.Column("status", sa.Text, nullable=False, server_default="active"),
        sa.Column("merged_into", sa.Uuid),
        _at("signed_up_at"),
        sa.Column("tier", sa.Text),
        # State kept incrementally from purchase events (see services/scoring/state.py).
        _at("first_purchase_at"),
        _at("last_purchase_at"),
        sa.Column("first_day", sa.Date),
        sa.Column("last_day", sa.Date),
        sa.Column("orders", sa.Integer, nullable=False, server_default="0"),
        sa.Column("purchase_days", sa.Integer, nullable=False, server_default="0"),
        sa.Column("spend_minor", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("repeat_spend_minor", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("currency", sa.Text),
        sa.Column("stores", JSONB, nullable=False, server_default="{}"),
        sa.Column("channels", JSONB, nullable=False, server_default="{}"),
        # Scores (see services/scoring/scores.py); NULL until first scored.
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
        _at("scored_at"),
        # What was last published in `customer.scored` (no event storm on every purchase).
        sa.Column("published", JSONB),
        _at("updated_at", nullable=False),
        sa.CheckConstraint("status IN ('active', 'merged', 'erased')", name="ck_customers_status"),
        schema=SCHEMA,
    )
    op.create_index("ix_customers_churn_band", "customers", ["churn_band"], schema=SCHEMA)
    op.create_index("ix_customers_rfm_segment", "customers", ["rfm_segment"], schema=SCHEMA)
    op.create_table(
        "purchases",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("customer_id", sa.Uuid, nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("total_minor", sa.BigInteger, nullable=False),
        sa.Column("refunded_minor", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("store_id", sa.Text),
        sa.Column("channel", sa.Text, nullable=False),
        _at("purchased_at", nullable=False),
        schema=SCHEMA,
    )
    op.create_index("ix_purchases_customer_day", "purchases", ["customer_id", "day"], schema=SCHEMA)
    op.create_table(
        "refunds",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("purchase_id", sa.Uuid, nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        _at("refunded_at", nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "fits",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("params", JSONB, nullable=False),
        sa.Column("standard_errors", JSONB, nullable=False),
        sa.Column("log_likelihood", sa.Float, nullable=False),
        sa.Column("time_unit", sa.Text, nullable=False),
        sa.Column("customers", sa.Integer, nullable=False),
        sa.Column("diagnostics", JSONB, nullable=False, server_default="{}"),
        sa.Column("trigger", sa.Text, nullable=False),
        _at("as_of", nullable=False),
        _at("created_at", nullable=False),
        sa.CheckConstraint("model IN ('bgnbd', 'gamma_gamma', 'rfm')", name="ck_fits_model"),
        schema=SCHEMA,
    )
    op.create_index("ix_fits_model_created", "fits", ["model", "created_at"], schema=SCHEMA)
    op.create_table(
        "segments",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("name", sa.Text, nullable=False, unique=True),
        sa.Column("rule", sa.Text, nullable=False),
        sa.Column("description", sa.Text),
        _at("created_at", nullable=False),
        _at("updated_at", nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "segment_members",
        sa.Column("segment_id", sa.Uuid, primary_key=True),
        sa.Column("customer_id", sa.Uuid, primary_key=True),
        _at("entered_at", nullable=False),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_segment_members_customer", "segment_members", ["customer_id"], schema=SCHEMA
    )


def downgrade() -> None:
    for table in ("segment_members", "segments", "fits", "refunds", "purchases", "customers"):
        op.drop_table(table, schema=SCHEMA)
