"""Contacts, consents and their history, import jobs.

Revision ID: contacts_0002
Revises: contacts_0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

revision = "contacts_0002"
down_revision = "contacts_0001"
branch_labels = None
depends_on = None

SCHEMA = "contacts"


def upgrade() -> None:
    op.create_table(
        "contacts",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("status", sa.Text, nullable=False, server_default="active"),
        sa.Column("given_name", sa.Text),
        sa.Column("family_name", sa.Text),
        sa.Column("email", sa.Text),
        sa.Column("phone", sa.Text),
        sa.Column("card_number", sa.Text),
        sa.Column("birthday_month", sa.SmallInteger),
        sa.Column("birthday_day", sa.SmallInteger),
        sa.Column("birthday_year", sa.SmallInteger),
        sa.Column("locale", sa.Text),
        sa.Column("time_zone", sa.Text),
        sa.Column("social", JSONB, nullable=False, server_default="{}"),
        sa.Column("tags", ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("attributes", JSONB, nullable=False, server_default="{}"),
        sa.Column("signup_source", sa.Text, nullable=False),
        sa.Column("signup_store", sa.Text),
        sa.Column("referral_code", sa.Text),
        sa.Column("merged_into", sa.Uuid),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint(
            "status IN ('active', 'merged', 'erased')", name="ck_contacts_status_known"
        ),
        schema=SCHEMA,
    )
    # Unique identifiers: the till looks customers up by each of them.
    for column in ("email", "phone", "card_number"):
        op.create_index(
            f"uq_contacts_{column}",
            "contacts",
            [column],
            unique=True,
            schema=SCHEMA,
            postgresql_where=sa.text(f"{column} IS NOT NULL"),
        )
    op.create_index("ix_contacts_created_at_id", "contacts", ["created_at", "id"], schema=SCHEMA)
    op.create_index("ix_contacts_tags", "contacts", ["tags"], schema=SCHEMA, postgresql_using="gin")
    op.create_table(
        "consents",
        sa.Column("contact_id", sa.Uuid, primary_key=True),
        sa.Column("channel", sa.Text, primary_key=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("proof", sa.Text),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "consent_history",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("contact_id", sa.Uuid, nullable=False, index=True),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("proof", sa.Text),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema=SCHEMA,
    )
    op.create_table(
        "import_jobs",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("filename", sa.Text),
        sa.Column("rows_seen", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("rows_created", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("rows_updated", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("rows_failed", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("error", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        schema=SCHEMA,
    )
    op.create_table(
        "import_errors",
        sa.Column("job_id", sa.Uuid, primary_key=True),
        sa.Column("line", sa.BigInteger, primary_key=True),
        sa.Column("reason", sa.Text, nullable=False),
        schema=SCHEMA,
    )


def downgrade() -> None:
    for table in ("import_errors", "import_jobs", "consent_history", "consents", "contacts"):
        op.drop_table(table, schema=SCHEMA)
