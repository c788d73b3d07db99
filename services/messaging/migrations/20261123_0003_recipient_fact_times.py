"""When each fact of a recipient was true, so a late copy of an event changes nothing.

`recipients.facts_at` maps a fact group to the event time that last set it:
`profile`, `tier`, `points`, `expiring`, `scores`, `consent:<channel>` and
`segment:<segment id>` (the last enter or exit applied). Events on different topics
arrive in no guaranteed order; a handler applies an event only when its time is at
least the one recorded for the facts it sets.

Revision ID: messaging_0003
Revises: messaging_0002
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "messaging_0003"
down_revision = "messaging_0002"
branch_labels = None
depends_on = None

SCHEMA = "messaging"


def upgrade() -> None:
    op.add_column(
        "recipients",
        sa.Column("facts_at", JSONB, nullable=False, server_default="{}"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_column("recipients", "facts_at", schema=SCHEMA)
