"""Outbox, inbox and idempotency tables of the scoring schema.

Revision ID: scoring_0001
Revises:
Create Date: 2026-11-23
"""

from shared.pipeline.tables import create_platform_tables, drop_platform_tables

revision = "scoring_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_platform_tables("scoring")


def downgrade() -> None:
    drop_platform_tables("scoring")
