"""Test-only service schema for the HTTP conventions: platform tables and an orders table.

Revision ID: http_test_0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from shared.pipeline.tables import create_platform_tables

revision = "http_test_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_platform_tables("httptest")
    op.create_table(
        "orders",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("qty", sa.Integer, nullable=False),
        schema="httptest",
    )


def downgrade() -> None:
    op.drop_table("orders", schema="httptest")
