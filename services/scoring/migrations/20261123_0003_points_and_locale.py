"""Loyalty's points balance and the profile's locale, for segment rules.

Revision ID: scoring_0003
Revises: scoring_0002
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "scoring_0003"
down_revision = "scoring_0002"
branch_labels = None
depends_on = None

SCHEMA = "scoring"


def upgrade() -> None:
    op.add_column("customers", sa.Column("locale", sa.Text), schema=SCHEMA)
    op.add_column("customers", sa.Column("points_balance", sa.BigInteger), schema=SCHEMA)
    op.add_column(
        "customers",
        sa.Column("points_balance_at", sa.DateTime(timezone=True)),
        schema=SCHEMA,
    )


def downgrade() -> None:
    for column in ("points_balance_at", "points_balance", "locale"):
        op.drop_column("customers", column, schema=SCHEMA)
