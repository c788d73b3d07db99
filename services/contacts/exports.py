"""CSV export of a filtered list of contacts, streamed page by page.

The export reads one consistent snapshot (a repeatable-read, read-only transaction of its
own: the request's transaction ends before a streamed body is sent) through a
server-side cursor, so a million contacts never sit in memory. Its columns are the
import's, plus read-only ones the import accepts and ignores, so an export re-imports.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator, Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.contacts import import_rows
from services.contacts.models import Consent, Contact
from services.contacts.repository import ContactFilter, filtered
from shared.events.contacts import Channel

CHANNELS: tuple[str, ...] = Channel.__args__  # type: ignore[attr-defined]
# The importable columns in the import's own order, so that an export imports back as is.
BASE_COLUMNS = ("id", *import_rows.FIELDS, "signup_source", "created_at", "updated_at")
PAGE_SIZE = 2000
# Spreadsheets run a cell that starts with = + - @ as a formula; such cells get a leading
# apostrophe (the import removes it). Numbers, like +60123456789, are left alone.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?[0-9][0-9 .]*")


def _columns() -> list[Any]:
    consents = (
        select(func.jsonb_object_agg(Consent.channel, Consent.status))
        .where(Consent.contact_id == Contact.id)
        .scalar_subquery()
    )
    return [
        Contact.id,
        Contact.given_name,
        Contact.family_name,
        Contact.email,
        Contact.phone,
        Contact.card_number,
        Contact.birthday_month,
        Contact.birthday_day,
        Contact.birthday_year,
        Contact.locale,
        Contact.time_zone,
        Contact.tags,
        Contact.signup_store,
        Contact.signup_source,
        Contact.created_at,
        Contact.updated_at,
        consents,
        Contact.attributes,
    ]


async def stream_csv(
    sessions: async_sessionmaker[AsyncSession], criteria: ContactFilter
) -> AsyncIterator[bytes]:
    """The CSV bytes: first the header row (after the snapshot is taken), then pages."""
    async with sessions() as session, session.begin():
        await session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
        matching = filtered(criteria)
        keys_of = matching.with_only_columns(Contact.attributes).order_by(None).subquery()
        keys = sorted(
            (
                await session.execute(
                    select(func.jsonb_object_keys(keys_of.c.attributes)).distinct()
                )
            ).scalars()
        )
        header = [*BASE_COLUMNS, *(f"consent:{c}" for c in CHANNELS), *(f"attr:{k}" for k in keys)]
        yield encode_rows([header])
        statement = matching.with_only_columns(*_columns())
        result = await session.stream(statement.execution_options(yield_per=PAGE_SIZE))
        async for page in result.partitions(PAGE_SIZE):
            yield encode_rows([_row(row, keys) for row in page])


def _row(row: Any, keys: Sequence[str]) -> list[str]:
    (
        contact_id,
        given,
        family,
        email,
        phone,
        card,
        month,
        day,
        year,
        locale,
        zone,
        tags,
        store,
        source,
        created,
        updated,
        consents,
        attributes,
    ) = row
    birthday = ""
    if month and day:
        birthday = f"{year:04d}-{month:02d}-{day:02d}" if year else f"{month:02d}-{day:02d}"
    consents = consents or {}
    attributes = attributes or {}
    return [
        str(contact_id),
        _safe(given),
        _safe(family),
        _safe(email),
        _safe(phone),
        _safe(card),
        birthday,
        _safe(locale),
        _safe(zone),
        _safe(";".join(tags or [])),
        _safe(store),
        source,
        created.isoformat(),
        updated.isoformat(),
        *(consents.get(channel, "") for channel in CHANNELS),
        *(_value(attributes.get(key)) for key in keys),
    ]


def _value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, date | datetime):
        return value.isoformat()
    return _safe(str(value))


def _safe(value: str | None) -> str:
    if not value:
        return ""
    if value.startswith(_FORMULA_START) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def encode_rows(rows: list[list[str]]) -> bytes:
    """CSV lines (CRLF, as RFC 4180 has them) as UTF-8."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue().encode("utf-8")
