"""Outbox, inbox and idempotency tables of the referrals schema.

Revision ID: referrals_0001
Revises:
Create Date: 2026-11-23
"""

from shared.pipeline.tables import create_platform_tables, drop_platform_tables

revision = "referrals_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_platform_tables("referrals")


def downgrade() -> None:
    drop_platform_tables("referrals")
