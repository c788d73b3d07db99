"""Tables of the contacts schema.

Personal data lives in `contacts` (and the consent tables' proof); erasure blanks it but
keeps the row, so ids that ledgers elsewhere refer to stay valid.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.pipeline.tables import NAMING_CONVENTION

SCHEMA = "contacts"


class Base(DeclarativeBase):
    metadata = sa.MetaData(schema=SCHEMA, naming_convention=NAMING_CONVENTION)


class Contact(Base):
    """One customer of the business."""

    __tablename__ = "contacts"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    status: Mapped[str] = mapped_column(sa.Text, default="active")  # active|merged|erased
    given_name: Mapped[str | None] = mapped_column(sa.Text)
    family_name: Mapped[str | None] = mapped_column(sa.Text)
    email: Mapped[str | None] = mapped_column(sa.Text)
    phone: Mapped[str | None] = mapped_column(sa.Text)
    card_number: Mapped[str | None] = mapped_column(sa.Text)
    birthday_month: Mapped[int | None] = mapped_column(sa.SmallInteger)
    birthday_day: Mapped[int | None] = mapped_column(sa.SmallInteger)
    birthday_year: Mapped[int | None] = mapped_column(sa.SmallInteger)
    locale: Mapped[str | None] = mapped_column(sa.Text)
    time_zone: Mapped[str | None] = mapped_column(sa.Text)
    social: Mapped[dict[str, str]] = mapped_column(JSONB, default=dict)
    tags: Mapped[list[str]] = mapped_column(ARRAY(sa.Text), default=list)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    signup_source: Mapped[str] = mapped_column(sa.Text)
    signup_store: Mapped[str | None] = mapped_column(sa.Text)
    referral_code: Mapped[str | None] = mapped_column(sa.Text)
    merged_into: Mapped[uuid.UUID | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    erased_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))


class Consent(Base):
    """The current permission per customer and channel."""

    __tablename__ = "consents"

    contact_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    status: Mapped[str] = mapped_column(sa.Text)
    source: Mapped[str] = mapped_column(sa.Text)
    proof: Mapped[str | None] = mapped_column(sa.Text)
    changed_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))


class ConsentRecord(Base):
    """Every consent change ever made: the history a regulator may ask for."""

    __tablename__ = "consent_history"

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    contact_id: Mapped[uuid.UUID] = mapped_column(index=True)
    channel: Mapped[str] = mapped_column(sa.Text)
    status: Mapped[str] = mapped_column(sa.Text)
    source: Mapped[str] = mapped_column(sa.Text)
    proof: Mapped[str | None] = mapped_column(sa.Text)
    changed_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    recorded_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.func.now()
    )


class ImportJob(Base):
    """A CSV import: its progress and outcome."""

    __tablename__ = "import_jobs"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    status: Mapped[str] = mapped_column(sa.Text)  # receiving|running|completed|failed
    filename: Mapped[str | None] = mapped_column(sa.Text)
    rows_seen: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    rows_created: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    rows_updated: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    rows_failed: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))


class ImportRowError(Base):
    """One rejected line of an import, with the reason."""

    __tablename__ = "import_errors"

    job_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    line: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    reason: Mapped[str] = mapped_column(sa.Text)
