"""The PostgreSQL transport's event log: topics, gap-free partition logs, group offsets.

Revision ID: eventlog_0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "eventlog_0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "crm_events"


def upgrade() -> None:
    op.create_table(
        "topics",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("partitions", sa.Integer, nullable=False),
        sa.CheckConstraint("partitions > 0", name="ck_topics_partitions_positive"),
        schema=SCHEMA,
    )
    op.create_table(
        "partition_heads",
        sa.Column("topic", sa.Text, primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True),
        sa.Column("next_offset", sa.BigInteger, nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "event_log",
        sa.Column("topic", sa.Text, primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True),
        sa.Column("offset", sa.BigInteger, primary_key=True),
        sa.Column("key", sa.Text),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.Column(
            "appended_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema=SCHEMA,
    )
    op.create_table(
        "consumer_offsets",
        sa.Column("consumer_group", sa.Text, primary_key=True),
        sa.Column("topic", sa.Text, primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True),
        sa.Column("next_offset", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema=SCHEMA,
    )


def downgrade() -> None:
    for table in ("consumer_offsets", "event_log", "partition_heads", "topics"):
        op.drop_table(table, schema=SCHEMA)
