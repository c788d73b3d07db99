"""Recipients (a projection of other services' events), templates, campaigns, triggers,
the send ledger, conversions and surveys.

Revision ID: messaging_0002
Revises: messaging_0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

revision = "messaging_0002"
down_revision = "messaging_0001"
branch_labels = None
depends_on = None

SCHEMA = "messaging"


def _at(name: str, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "recipients",
        sa.Column("customer_id", sa.Uuid, primary_key=True),
        sa.Column("status", sa.Text, nullable=False, server_default="active"),
        sa.Column("merged_into", sa.Uuid),
        sa.Column("given_name", sa.Text),
        sa.Column("family_name", sa.Text),
        sa.Column("email", sa.Text),
        sa.Column("phone", sa.Text),
        sa.Column("locale", sa.Text),
        sa.Column("time_zone", sa.Text),
        sa.Column("birth_month", sa.SmallInteger),
        sa.Column("birth_day", sa.SmallInteger),
        sa.Column("birth_year", sa.SmallInteger),
        sa.Column("consents", JSONB, nullable=False, server_default="{}"),
        sa.Column("undeliverable", JSONB, nullable=False, server_default="{}"),
        sa.Column("tier", sa.Text),
        sa.Column("points_balance", sa.BigInteger),
        sa.Column("expiring_points", sa.BigInteger),
        _at("expiring_at"),
        sa.Column("churn_band", sa.Text),
        sa.Column("churn_risk", sa.Float),
        sa.Column("clv", sa.Float),
        sa.Column("rfm_segment", sa.Text),
        _at("signed_up_at"),
        _at("last_purchase_at"),
        _at("updated_at", nullable=False),
        sa.CheckConstraint("status IN ('active', 'merged', 'erased')", name="ck_recipients_status"),
        schema=SCHEMA,
    )
    op.create_table(
        "segment_members",
        sa.Column("segment_id", sa.Uuid, primary_key=True),
        sa.Column("customer_id", sa.Uuid, primary_key=True),
        sa.Column("segment_name", sa.Text, nullable=False),
        _at("entered_at", nullable=False),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_segment_members_customer", "segment_members", ["customer_id"], schema=SCHEMA
    )
    op.create_table(
        "templates",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("locale", sa.Text, nullable=False),
        sa.Column("subject", sa.Text),
        sa.Column("body", sa.Text, nullable=False),
        _at("created_at", nullable=False),
        _at("updated_at", nullable=False),
        sa.UniqueConstraint("name", "channel", "locale", name="uq_templates_name_channel_locale"),
        schema=SCHEMA,
    )
    op.create_table(
        "campaigns",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("audience", JSONB, nullable=False),
        sa.Column("offer", JSONB),
        sa.Column("channels", ARRAY(sa.Text), nullable=False),
        sa.Column("template", sa.Text, nullable=False),
        sa.Column("schedule", JSONB, nullable=False),
        sa.Column("throttle_per_minute", sa.Integer),
        sa.Column("experiment", JSONB),
        sa.Column("attribution_days", sa.Integer, nullable=False),
        sa.Column("created_by", sa.Text),
        _at("created_at", nullable=False),
        _at("started_at"),
        _at("completed_at"),
        _at("updated_at", nullable=False),
        sa.CheckConstraint(
            "status IN ('draft', 'scheduled', 'running', 'paused', 'cancelled', 'completed')",
            name="ck_campaigns_status",
        ),
        schema=SCHEMA,
    )
    op.create_table(
        "triggers",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("delay_seconds", sa.Integer, nullable=False, server_default="0"),
        sa.Column("template", sa.Text),
        sa.Column("offer", JSONB),
        sa.Column("options", JSONB, nullable=False, server_default="{}"),
        _at("updated_at", nullable=False),
        schema=SCHEMA,
    )
    # The send ledger: one row per (campaign or trigger occurrence, customer, channel),
    # reserved before the provider is called, so no crash or redelivery sends twice.
    op.create_table(
        "sends",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("customer_id", sa.Uuid, nullable=False),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("variant", sa.Text),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("payload", JSONB),
        _at("not_before", nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("provider_message_id", sa.Text),
        sa.Column("last_error", sa.Text),
        _at("created_at", nullable=False),
        _at("reserved_at"),
        _at("sent_at"),
        _at("delivered_at"),
        _at("opened_at"),
        _at("clicked_at"),
        _at("failed_at"),
        sa.CheckConstraint(
            "status IN ('queued', 'reserved', 'sent', 'delivered', 'failed', 'skipped',"
            " 'held_out', 'cancelled')",
            name="ck_sends_status",
        ),
        sa.UniqueConstraint("source", "customer_id", "channel", name="uq_sends_source_customer"),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_sends_due",
        "sends",
        ["not_before"],
        schema=SCHEMA,
        postgresql_where=sa.text("status = 'queued'"),
    )
    op.create_index("ix_sends_customer", "sends", ["customer_id", "sent_at"], schema=SCHEMA)
    op.create_index("ix_sends_source_status", "sends", ["source", "status"], schema=SCHEMA)
    op.create_table(
        "conversions",
        sa.Column("purchase_id", sa.Uuid, primary_key=True),
        sa.Column("customer_id", sa.Uuid, nullable=False),
        sa.Column("send_id", sa.Uuid),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("total_minor", sa.BigInteger, nullable=False),
        _at("purchased_at", nullable=False),
        schema=SCHEMA,
    )
    op.create_index("ix_conversions_send", "conversions", ["send_id"], schema=SCHEMA)
    op.create_table(
        "surveys",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("questions", JSONB, nullable=False),
        _at("created_at", nullable=False),
        sa.CheckConstraint("kind IN ('nps', 'relationship')", name="ck_surveys_kind"),
        schema=SCHEMA,
    )
    op.create_table(
        "survey_responses",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("survey_id", sa.Uuid, nullable=False),
        sa.Column("customer_id", sa.Uuid, nullable=False),
        sa.Column("send_id", sa.Uuid),
        sa.Column("score", sa.SmallInteger),
        sa.Column("answers", JSONB, nullable=False, server_default="{}"),
        _at("answered_at", nullable=False),
        sa.UniqueConstraint("survey_id", "customer_id", "send_id", name="uq_survey_responses"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    for table in (
        "survey_responses",
        "surveys",
        "conversions",
        "sends",
        "triggers",
        "campaigns",
        "templates",
        "segment_members",
        "recipients",
    ):
        op.drop_table(table, schema=SCHEMA)
