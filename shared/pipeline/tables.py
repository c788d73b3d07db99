"""Tables the platform keeps in every service's schema, and the migration helper that makes them.

* `outbox`: events written in the same transaction as the state change they describe.
* `inbox`: (consumer group, event id) of every event a handler applied, so redelivery is
  recognised and skipped.
* `idempotency_keys`: stored responses of effectful POSTs, replayed for a repeated key.
"""

from __future__ import annotations

from functools import cache

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _outbox_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("event_id", UUID(as_uuid=True), nullable=False, unique=True),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("published_at", sa.DateTime(timezone=True)),
    ]


def _inbox_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("consumer_group", sa.Text, primary_key=True),
        sa.Column("event_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("outcome", sa.Text, nullable=False, server_default="applied"),
        sa.Column(
            "processed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    ]


def _idempotency_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("principal", sa.Text, primary_key=True),
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("headers", JSONB),
        sa.Column("body", sa.LargeBinary),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    ]


class PlatformTables:
    """Core table objects of one schema, for the repositories of the pipeline and HTTP layer."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        metadata = sa.MetaData(schema=schema, naming_convention=NAMING_CONVENTION)
        self.outbox = sa.Table("outbox", metadata, *_outbox_columns())
        self.inbox = sa.Table("inbox", metadata, *_inbox_columns())
        self.idempotency_keys = sa.Table("idempotency_keys", metadata, *_idempotency_columns())


@cache
def platform_tables(schema: str) -> PlatformTables:
    """The (cached) table objects of `schema`."""
    return PlatformTables(schema)


def create_platform_tables(schema: str) -> None:
    """Alembic helper: make the outbox, inbox and idempotency tables in `schema`.

    Called from each service's first revision; a later change to these tables is a new
    helper called from a new revision, never an edit of this one.
    """
    op.create_table("outbox", *_outbox_columns(), schema=schema)
    op.create_index(
        "ix_outbox_unpublished",
        "outbox",
        ["id"],
        schema=schema,
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.create_table("inbox", *_inbox_columns(), schema=schema)
    op.create_table("idempotency_keys", *_idempotency_columns(), schema=schema)
    op.create_index(
        "ix_idempotency_keys_expires_at", "idempotency_keys", ["expires_at"], schema=schema
    )


def drop_platform_tables(schema: str) -> None:
    """Alembic helper: undo `create_platform_tables`."""
    op.drop_table("idempotency_keys", schema=schema)
    op.drop_table("inbox", schema=schema)
    op.drop_table("outbox", schema=schema)
