"""Index the event log by append time, for retention purges.

Revision ID: eventlog_0002
Revises: eventlog_0001
Create Date: 2026-11-23
"""

from alembic import op

revision = "eventlog_0002"
down_revision = "eventlog_0001"
branch_labels = None
depends_on = None

SCHEMA = "crm_events"


def upgrade() -> None:
    op.create_index("ix_event_log_appended_at", "event_log", ["appended_at"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_index("ix_event_log_appended_at", "event_log", schema=SCHEMA)
