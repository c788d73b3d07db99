"""Outbox, inbox and idempotency tables of the loyalty schema.

Revision ID: loyalty_0001
Revises:
Create Date: 2026-11-23
"""

from shared.pipeline.tables import create_platform_tables, drop_platform_tables

revision = "loyalty_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_platform_tables("loyalty")


def downgrade() -> None:
    drop_platform_tables("loyalty")
