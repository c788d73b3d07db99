"""Find a send by the provider's message id, for delivery and bounce callbacks.

Providers report on a message by their own id (`POST /providers/{channel}/status` with
`provider_message_id`); without an index each report would scan the whole ledger. Partial:
rows not sent yet have no provider id.

Revision ID: messaging_0004
Revises: messaging_0003
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "messaging_0004"
down_revision = "messaging_0003"
branch_labels = None
depends_on = None

SCHEMA = "messaging"


def upgrade() -> None:
    op.create_index(
        "ix_sends_provider_message_id",
        "sends",
        ["provider_message_id"],
        schema=SCHEMA,
        postgresql_where=sa.text("provider_message_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_sends_provider_message_id", "sends", schema=SCHEMA)
