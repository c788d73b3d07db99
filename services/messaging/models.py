"""Tables of the messaging schema (SQLAlchemy Core), mirroring its migrations."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from shared.db.columns import timestamptz
from shared.pipeline.tables import NAMING_CONVENTION

SCHEMA = "messaging"
metadata = sa.MetaData(schema=SCHEMA, naming_convention=NAMING_CONVENTION)


recipients = sa.Table(
    "recipients",
    metadata,
    sa.Column("customer_id", sa.Uuid, primary_key=True),
    sa.Column("status", sa.Text, nullable=False),
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
    sa.Column("consents", JSONB, nullable=False),
    sa.Column("undeliverable", JSONB, nullable=False),
    sa.Column("tier", sa.Text),
    sa.Column("points_balance", sa.BigInteger),
    sa.Column("expiring_points", sa.BigInteger),
    timestamptz("expiring_at"),
    sa.Column("churn_band", sa.Text),
    sa.Column("churn_risk", sa.Float),
    sa.Column("clv", sa.Float),
    sa.Column("rfm_segment", sa.Text),
    timestamptz("signed_up_at"),
    timestamptz("last_purchase_at"),
    timestamptz("updated_at", nullable=False),
    # {fact group: event time that set it}, so late copies change nothing (migration 0003).
    sa.Column("facts_at", JSONB, nullable=False, server_default="{}"),
)

segment_members = sa.Table(
    "segment_members",
    metadata,
    sa.Column("segment_id", sa.Uuid, primary_key=True),
    sa.Column("customer_id", sa.Uuid, primary_key=True),
    sa.Column("segment_name", sa.Text, nullable=False),
    timestamptz("entered_at", nullable=False),
)

templates = sa.Table(
    "templates",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("channel", sa.Text, nullable=False),
    sa.Column("locale", sa.Text, nullable=False),
    sa.Column("subject", sa.Text),
    sa.Column("body", sa.Text, nullable=False),
    timestamptz("created_at", nullable=False),
    timestamptz("updated_at", nullable=False),
)

campaigns = sa.Table(
    "campaigns",
    metadata,
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
    timestamptz("created_at", nullable=False),
    timestamptz("started_at"),
    timestamptz("completed_at"),
    timestamptz("updated_at", nullable=False),
)

triggers = sa.Table(
    "triggers",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("delay_seconds", sa.Integer, nullable=False),
    sa.Column("template", sa.Text),
    sa.Column("offer", JSONB),
    sa.Column("options", JSONB, nullable=False),
    timestamptz("updated_at", nullable=False),
)

sends = sa.Table(
    "sends",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("customer_id", sa.Uuid, nullable=False),
    sa.Column("channel", sa.Text, nullable=False),
    sa.Column("variant", sa.Text),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("payload", JSONB),
    timestamptz("not_before", nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("provider_message_id", sa.Text),
    sa.Column("last_error", sa.Text),
    timestamptz("created_at", nullable=False),
    timestamptz("reserved_at"),
    timestamptz("sent_at"),
    timestamptz("delivered_at"),
    timestamptz("opened_at"),
    timestamptz("clicked_at"),
    timestamptz("failed_at"),
)

conversions = sa.Table(
    "conversions",
    metadata,
    sa.Column("purchase_id", sa.Uuid, primary_key=True),
    sa.Column("customer_id", sa.Uuid, nullable=False),
    sa.Column("send_id", sa.Uuid),
    sa.Column("currency", sa.Text, nullable=False),
    sa.Column("total_minor", sa.BigInteger, nullable=False),
    sa.Column("refunded_minor", sa.BigInteger, nullable=False, server_default="0"),
    timestamptz("purchased_at", nullable=False),
)

conversion_refunds = sa.Table(
    "conversion_refunds",
    metadata,
    sa.Column("refund_id", sa.Uuid, primary_key=True),
    sa.Column("purchase_id", sa.Uuid, nullable=False),
    sa.Column("amount_minor", sa.BigInteger, nullable=False),
)

surveys = sa.Table(
    "surveys",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("questions", JSONB, nullable=False),
    timestamptz("created_at", nullable=False),
)

survey_responses = sa.Table(
    "survey_responses",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("survey_id", sa.Uuid, nullable=False),
    sa.Column("customer_id", sa.Uuid, nullable=False),
    sa.Column("send_id", sa.Uuid),
    sa.Column("score", sa.SmallInteger),
    sa.Column("answers", JSONB, nullable=False),
    timestamptz("answered_at", nullable=False),
)
