"""Test-only consumer schema: platform tables plus a table of applied events.

Revision ID: pipeline_test_0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from shared.pipeline.tables import create_platform_tables

revision = "pipeline_test_0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "pipeline_test"


def upgrade() -> None:
    create_platform_tables(SCHEMA)
    op.create_table(
        "applied",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("consumer_group", sa.Text, nullable=False),
        sa.Column("event_id", sa.Uuid, nullable=False),
        sa.Column("entity", sa.Text, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("applied", schema=SCHEMA)
