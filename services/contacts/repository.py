"""Every query of the contacts service."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, and_, exists, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from services.contacts.models import Consent, Contact

IDENTIFIERS = ("email", "phone", "card_number")


async def get(
    session: AsyncSession, contact_id: uuid.UUID, *, lock: bool = False
) -> Contact | None:
    """The contact with `contact_id`, optionally locked for update."""
    statement = select(Contact).where(Contact.id == contact_id)
    if lock:
        statement = statement.with_for_update()
    return (await session.execute(statement)).scalar_one_or_none()


async def find_by_identifier(session: AsyncSession, column: str, value: str) -> Contact | None:
    """The contact whose email, phone or card number is `value`."""
    attribute = getattr(Contact, column)
    return (await session.execute(select(Contact).where(attribute == value))).scalar_one_or_none()


async def holders_of(
    session: AsyncSession, values: dict[str, str], exclude: uuid.UUID | None = None
) -> dict[str, uuid.UUID]:
    """Which existing contacts already hold these identifiers (column -> their id)."""
    found: dict[str, uuid.UUID] = {}
    for column, value in values.items():
        holder = await find_by_identifier(session, column, value)
        if holder is not None and holder.id != exclude:
            found[column] = holder.id
    return found


async def consents_of(session: AsyncSession, contact_ids: Sequence[uuid.UUID]) -> list[Consent]:
    """Current consents of several contacts."""
    if not contact_ids:
        return []
    rows = await session.execute(select(Consent).where(Consent.contact_id.in_(contact_ids)))
    return list(rows.scalars())


@dataclass(frozen=True)
class ContactFilter:
    """What `GET /v1/contacts` and the CSV export filter on."""

    text: str | None = None
    tag: str | None = None
    consent_channel: str | None = None
    consent_status: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    include_inactive: bool = False


def filtered(criteria: ContactFilter) -> Select[Contact]:
    """The select of contacts matching `criteria`, oldest first."""
    statement = select(Contact)
    if not criteria.include_inactive:
        statement = statement.where(Contact.status == "active")
    if criteria.text:
        pattern = (
            "%" + criteria.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        )
        statement = statement.where(
            or_(
                Contact.given_name.ilike(pattern),
                Contact.family_name.ilike(pattern),
                Contact.email.ilike(pattern),
                Contact.phone.ilike(pattern),
                Contact.card_number.ilike(pattern),
            )
        )
    if criteria.tag:
        statement = statement.where(Contact.tags.contains([criteria.tag.lower()]))
    if criteria.consent_channel:
        condition = and_(
            Consent.contact_id == Contact.id, Consent.channel == criteria.consent_channel
        )
        if criteria.consent_status:
            condition = and_(condition, Consent.status == criteria.consent_status)
        statement = statement.where(exists().where(condition))
    if criteria.created_from:
        statement = statement.where(Contact.created_at >= criteria.created_from)
    if criteria.created_to:
        statement = statement.where(Contact.created_at < criteria.created_to)
    return statement.order_by(Contact.created_at, Contact.id)


def encode_cursor(contact: Contact) -> str:
    """An opaque cursor after `contact` in (created_at, id) order."""
    raw = f"{contact.created_at.isoformat()}|{contact.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The position a cursor points after; ValueError when it was not made by us."""
    padded = cursor + "=" * (-len(cursor) % 4)
    created, _, contact_id = base64.urlsafe_b64decode(padded.encode()).decode().partition("|")
    return datetime.fromisoformat(created), uuid.UUID(contact_id)


async def page(
    session: AsyncSession, criteria: ContactFilter, limit: int, cursor: str | None
) -> tuple[list[Contact], str | None]:
    """One page of matching contacts and the cursor of the next, if any."""
    statement = filtered(criteria)
    if cursor:
        after = decode_cursor(cursor)
        statement = statement.where(tuple_(Contact.created_at, Contact.id) > after)
    rows = list((await session.execute(statement.limit(limit + 1))).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1]) if more and rows else None
