"""Refunds netted out of conversion revenue.

Revision ID: messaging_0005
Revises: messaging_0004
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "messaging_0005"
down_revision = "messaging_0004"
branch_labels = None
depends_on = None

SCHEMA = "messaging"


def upgrade() -> None:
    op.add_column(
        "conversions",
        sa.Column("refunded_minor", sa.BigInteger, nullable=False, server_default="0"),
        schema=SCHEMA,
    )
    op.create_table(
        "conversion_refunds",
        sa.Column("refund_id", sa.Uuid, primary_key=True),
        sa.Column("purchase_id", sa.Uuid, nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_conversion_refunds_purchase", "conversion_refunds", ["purchase_id"], schema=SCHEMA
    )


def downgrade() -> None:
    op.drop_table("conversion_refunds", schema=SCHEMA)
    op.drop_column("conversions", "refunded_minor", schema=SCHEMA)
