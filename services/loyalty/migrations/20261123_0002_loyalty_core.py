"""Members (a projection of contacts), purchases, refunds, the points ledger and its lots,
versioned earning rules.

Revision ID: loyalty_0002
Revises: loyalty_0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "loyalty_0002"
down_revision = "loyalty_0001"
branch_labels = None
depends_on = None

SCHEMA = "loyalty"


def _now() -> sa.Column[object]:
    return sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    )


def upgrade() -> None:
    op.create_table(
        "members",
        sa.Column("customer_id", sa.Uuid, primary_key=True),
        sa.Column("status", sa.Text, nullable=False, server_default="active"),
        sa.Column("card_number", sa.Text),
        sa.Column("phone", sa.Text),
        sa.Column("email", sa.Text),
        sa.Column("tier", sa.Text),
        sa.Column("balance", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("debt", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("merged_into", sa.Uuid),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint("debt >= 0", name="ck_members_debt_not_negative"),
        schema=SCHEMA,
    )
    for column in ("card_number", "phone", "email"):
        op.create_index(f"ix_members_{column}", "members", [column], schema=SCHEMA)
    op.create_table(
        "purchases",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("customer_id", sa.Uuid, nullable=False, index=True),
        sa.Column("store_id", sa.Text, nullable=False, server_default=""),
        sa.Column("order_id", sa.Text, nullable=False),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("total_minor", sa.BigInteger, nullable=False),
        sa.Column("refunded_minor", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("lines", JSONB, nullable=False, server_default="[]"),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("purchased_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("points", sa.BigInteger, nullable=False),
        sa.Column("points_reversed", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("rule_version", sa.Integer),
        sa.Column("origin", sa.Text, nullable=False),
        _now(),
        sa.UniqueConstraint("store_id", "order_id", name="uq_purchases_store_order"),
        sa.CheckConstraint("refunded_minor <= total_minor", name="ck_purchases_refund_bounded"),
        schema=SCHEMA,
    )
    op.create_table(
        "refunds",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("purchase_id", sa.Uuid, nullable=False, index=True),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("points", sa.BigInteger, nullable=False),
        sa.Column("refunded_at", sa.DateTime(timezone=True), nullable=False),
        _now(),
        schema=SCHEMA,
    )
    op.create_table(
        "ledger",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("customer_id", sa.Uuid, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("points", sa.BigInteger, nullable=False),
        sa.Column("reference", sa.Text),
        sa.Column("reason", sa.Text),
        sa.Column("actor", sa.Text),
        sa.Column("available_at", sa.DateTime(timezone=True)),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        _now(),
        sa.CheckConstraint(
            "kind IN ('earn', 'redeem', 'redeem_release', 'expire', 'adjust', "
            "'refund_reversal', 'bonus', 'merge_in', 'merge_out')",
            name="ck_ledger_kind_known",
        ),
        schema=SCHEMA,
    )
    op.create_index("ix_ledger_customer_id_id", "ledger", ["customer_id", "id"], schema=SCHEMA)
    op.create_index(
        "uq_ledger_kind_reference",
        "ledger",
        ["kind", "reference"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text("reference IS NOT NULL"),
    )
    op.create_table(
        "lots",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("customer_id", sa.Uuid, nullable=False),
        sa.Column("ledger_id", sa.BigInteger, nullable=False),
        sa.Column("points", sa.BigInteger, nullable=False),
        sa.Column("remaining", sa.BigInteger, nullable=False),
        sa.Column("available_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("remaining >= 0 AND remaining <= points", name="ck_lots_remaining"),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_lots_open",
        "lots",
        ["customer_id", "id"],
        schema=SCHEMA,
        postgresql_where=sa.text("remaining > 0"),
    )
    op.create_table(
        "lot_consumptions",
        sa.Column("ledger_id", sa.BigInteger, primary_key=True),
        sa.Column("lot_id", sa.BigInteger, primary_key=True),
        sa.Column("points", sa.BigInteger, nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "earning_rules",
        sa.Column("version", sa.Integer, sa.Identity(), primary_key=True),
        sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rules", JSONB, nullable=False),
        sa.Column("created_by", sa.Text),
        _now(),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_earning_rules_effective_from", "earning_rules", ["effective_from"], schema=SCHEMA
    )


def downgrade() -> None:
    for table in (
        "earning_rules",
        "lot_consumptions",
        "lots",
        "ledger",
        "refunds",
        "purchases",
        "members",
    ):
        op.drop_table(table, schema=SCHEMA)
