"""GDPR requests: export everything held about a customer, and erase their personal data.

Erasure keeps the `contacts` row as an anonymous id (ledgers in other services still
refer to it) and scrubs every place in the contacts schema that can hold the person's
data: the profile columns, consent proofs (current and history), the outbox payloads of
their events, stored Idempotency-Key responses, and import error texts that mention their
identifiers. Functions here flush but never commit: the request owns the transaction, so
the scrub and the `customer.erased` event commit together.

The SQL of these steps lives here rather than in `repository.py` because it serves only
erasure and export (see docs/contacts/merge-and-gdpr.md).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog
from sqlalchemy import delete, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.contacts import errors
from services.contacts.models import (
    SCHEMA,
    Consent,
    ConsentRecord,
    Contact,
    ImportJob,
    ImportRowError,
)
from services.contacts.profiles import SOURCE
from shared.events.contacts import CustomerErased, ProfileSnapshot
from shared.events.platform import EventDeadLettered
from shared.pipeline.outbox import add_event
from shared.pipeline.tables import platform_tables

log = structlog.get_logger(__name__)

EXPORT_TIMEOUT_SECONDS = 10.0
"""How long the export waits for each other service's part (a whole request, not per read)."""

ERASED = "[erased]"
"""What replaces a customer's identifier inside free text (import error reasons)."""

# Column values of a contact without personal data. Signup source, store and time stay:
# they describe the business's channel, not the person, and reports count signups by them.
_BLANK: dict[str, Any] = {
    "given_name": None,
    "family_name": None,
    "email": None,
    "phone": None,
    "card_number": None,
    "birthday_month": None,
    "birthday_day": None,
    "birthday_year": None,
    "locale": None,
    "time_zone": None,
    "referral_code": None,
}

# Fields of event data that carry personal data, and what an erased payload holds instead.
# The replacements keep each event valid for its schema, so consumers still parse it.
_SCRUBBED_EVENT_FIELDS: dict[str, Any] = {
    "profile": ProfileSnapshot().model_dump(mode="json"),
    "address": "",
    "referral_code": None,
    "locale": None,
    "time_zone": None,
}


def clear_personal_data(contact: Contact) -> None:
    """Blank every personal column of `contact` (identifiers, names, birthday, ...)."""
    for column, value in _BLANK.items():
        setattr(contact, column, value)
    contact.social = {}
    contact.tags = []
    contact.attributes = {}


def scrub_payload(payload: str) -> str:
    """An outbox payload (event envelope JSON) with the personal fields of its data blanked."""
    envelope = json.loads(payload)
    data = envelope.get("data")
    if isinstance(data, dict):
        for field, replacement in _SCRUBBED_EVENT_FIELDS.items():
            if field in data:
                data[field] = replacement
        if envelope.get("type") == EventDeadLettered.event_type:
            data["payload"] = ""  # the original message, which may be a profile event
    return json.dumps(envelope, ensure_ascii=False, separators=(",", ":"))


def identifier_needles(contacts: Iterable[Contact]) -> list[str]:
    """Strings that identify these people inside free text (email, phone, card number)."""
    needles: set[str] = set()
    for contact in contacts:
        for value in (contact.email, contact.phone, contact.card_number):
            if value:
                needles.add(value)
        if contact.phone:
            needles.add(contact.phone.lstrip("+"))  # E.164 as often written, without "+"
    return sorted(needles, key=len, reverse=True)


def redact(value: str, needles: Sequence[str]) -> str:
    """`value` with each needle (case-insensitive) replaced by `[erased]`."""
    for needle in needles:
        value = re.sub(re.escape(needle), ERASED, value, flags=re.IGNORECASE)
    return value


async def erase(
    session: AsyncSession, contact_id: uuid.UUID, *, now: datetime | None = None
) -> bool:
    """Erase a customer's personal data; False when it already was (nothing to do, no event).

    A merged duplicate cannot be erased by its own id (409 naming the survivor): its data
    moved to the survivor at the merge, so the survivor is the one to erase. Erasing a
    survivor also scrubs the rows of the duplicates merged into it.
    """
    now = now or datetime.now(UTC)
    rows = await _lock_with_duplicates(session, contact_id)
    contact = next((row for row in rows if row.id == contact_id), None)
    if contact is None:
        raise errors.not_found(contact_id)
    if contact.status == "erased":
        return False
    if contact.status == "merged":
        raise errors.gone(contact.id, contact.status, contact.merged_into)
    duplicates = [row for row in rows if row.id != contact_id]
    needles = identifier_needles(rows)  # before the columns are blanked
    for row in rows:
        clear_personal_data(row)
        row.erased_at = now
    contact.status = "erased"
    contact.updated_at = now
    await session.flush()

    subjects = [contact.id, *(d.id for d in duplicates)]
    await _scrub_consent_proofs(session, subjects)
    await _scrub_outbox(session, subjects)
    await _forget_idempotent_responses(session, subjects)
    if needles:
        await _scrub_import_texts(session, needles)
    await add_event(
        session, SCHEMA, CustomerErased(customer_id=contact.id, erased_at=now), source=SOURCE
    )
    log.info("contacts.customer.erased", customer_id=str(contact.id), duplicates=len(duplicates))
    return True


@dataclass(frozen=True)
class LocalExport:
    """What the contacts service holds about one customer."""

    contact: Contact
    consents: list[Consent]
    history: list[ConsentRecord]
    duplicates: list[Contact]


async def collect(session: AsyncSession, contact_id: uuid.UUID) -> LocalExport:
    """Everything of `contact_id` in the contacts schema; 404 when there is no such customer.

    Import errors are left out: they are kept per file line, without the customer's id,
    so they cannot be attributed to a customer reliably.
    """
    contact = await session.get(Contact, contact_id)
    if contact is None:
        raise errors.not_found(contact_id)
    consents = await session.execute(
        select(Consent).where(Consent.contact_id == contact_id).order_by(Consent.channel)
    )
    history = await session.execute(
        select(ConsentRecord)
        .where(ConsentRecord.contact_id == contact_id)
        .order_by(ConsentRecord.changed_at, ConsentRecord.id)
    )
    duplicates = await session.execute(
        select(Contact).where(Contact.merged_into == contact_id).order_by(Contact.created_at)
    )
    return LocalExport(
        contact, list(consents.scalars()), list(history.scalars()), list(duplicates.scalars())
    )


async def gather_parts(
    services: Mapping[str, str],
    customer_id: uuid.UUID,
    *,
    authorization: str | None,
    timeout: float = EXPORT_TIMEOUT_SECONDS,
) -> dict[str, Any]:
    """Each configured service's export part, fetched concurrently.

    `services` maps a service name to its base URL; the part is
    `GET {base}/v1/{name}/customers/{id}/export` with the caller's Authorization header.
    A service that fails, times out or cannot be reached yields `{"error": ...}` instead
    of failing the whole export.
    """
    names = sorted(name for name in services if name != SOURCE)
    headers = {"Accept": "application/json"}
    if authorization:
        headers["Authorization"] = authorization
    async with httpx.AsyncClient(headers=headers, timeout=timeout) as client:
        parts = await asyncio.gather(
            *(_fetch_part(client, name, services[name], customer_id, timeout) for name in names)
        )
    return dict(zip(names, parts, strict=True))


async def _fetch_part(
    client: httpx.AsyncClient, name: str, base: str, customer_id: uuid.UUID, timeout: float
) -> Any:
    url = f"{base.rstrip('/')}/v1/{name}/customers/{customer_id}/export"
    error: str
    status: int | None = None
    try:
        # httpx's timeout bounds each read; this bounds the whole answer.
        async with asyncio.timeout(timeout):
            response = await client.get(url)
        if response.status_code == 200:
            return response.json()
        status = response.status_code
        error = f"{name} answered HTTP {status}"
    except (TimeoutError, httpx.TimeoutException):
        error = f"{name} did not answer within {timeout:g} s"
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        error = f"{name} is unreachable: {type(exc).__name__}: {exc}"
    except ValueError:
        error = f"{name} answered with something that is not JSON"
    log.warning("contacts.export.part_failed", service=name, url=url, error=error)
    part: dict[str, Any] = {"error": error, "url": url}
    if status is not None:
        part["status"] = status
    return part


# Queries of erasure.


async def _lock_with_duplicates(session: AsyncSession, contact_id: uuid.UUID) -> list[Contact]:
    """Lock the customer and the duplicates merged into it, in id order (as merges do)."""
    statement = (
        select(Contact)
        .where(or_(Contact.id == contact_id, Contact.merged_into == contact_id))
        .order_by(Contact.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    await session.execute(statement)
    # Once more: a merge into this customer that committed while we waited for its lock
    # is invisible to the first statement's snapshot, and its duplicate must be scrubbed too.
    return list((await session.execute(statement)).scalars())


async def _scrub_consent_proofs(session: AsyncSession, subjects: Sequence[uuid.UUID]) -> None:
    # Channel, status, source and times stay: the record that consent was given or
    # withdrawn, and when, is what a business must be able to show. The proof text
    # (IP address, form, address confirmed) is personal data and goes.
    await session.execute(
        update(Consent).where(Consent.contact_id.in_(subjects)).values(proof=None)
    )
    await session.execute(
        update(ConsentRecord).where(ConsentRecord.contact_id.in_(subjects)).values(proof=None)
    )


async def _scrub_outbox(session: AsyncSession, subjects: Sequence[uuid.UUID]) -> None:
    """Delete the subjects' published events; blank the personal fields of unpublished ones.

    Published rows only wait for the relay's retention purge, so they can go now. Rows the
    relay has not sent yet are still delivered (consumers keep their order and ids) but
    with the personal fields blanked; the `customer.erased` event follows them. A row the
    relay is sending at this very moment goes out as it was, as it would have a moment
    earlier; its stored copy is scrubbed all the same.
    """
    outbox = platform_tables(SCHEMA).outbox
    keys = [str(subject) for subject in subjects]
    await session.execute(
        delete(outbox).where(outbox.c.key.in_(keys), outbox.c.published_at.is_not(None))
    )
    pending = await session.execute(
        select(outbox.c.id, outbox.c.payload)
        .where(outbox.c.key.in_(keys), outbox.c.published_at.is_(None))
        .with_for_update()
    )
    for row_id, payload in pending.all():
        scrubbed = scrub_payload(payload)
        if scrubbed != payload:
            await session.execute(
                update(outbox).where(outbox.c.id == row_id).values(payload=scrubbed)
            )


async def _forget_idempotent_responses(
    session: AsyncSession, subjects: Sequence[uuid.UUID]
) -> None:
    # Stored POST responses (signup, merge) repeat the profile. A replay of such a key
    # after erasure runs the request again, which is the right outcome for erased data.
    for subject in subjects:
        await session.execute(
            text(
                f'DELETE FROM "{SCHEMA}".idempotency_keys '
                "WHERE position(convert_to(:id, 'UTF8') IN coalesce(body, ''::bytea)) > 0 "
                "OR headers::text LIKE :pattern"
            ),
            {"id": str(subject), "pattern": f"%{subject}%"},
        )


async def _scrub_import_texts(session: AsyncSession, needles: Sequence[str]) -> None:
    """Redact the identifiers from import error reasons and job errors (best effort).

    Import errors carry no customer id; a reason that quotes the customer's email, phone
    (E.164) or card number is found by that text, and the text alone is redacted.
    """

    def mentions(column: Any) -> Any:
        return or_(*(column.ilike(f"%{_escape_like(n)}%", escape="\\") for n in needles))

    reasons = await session.execute(
        select(ImportRowError).where(mentions(ImportRowError.reason)).with_for_update()
    )
    for row in reasons.scalars():
        row.reason = redact(row.reason, needles)
    jobs = await session.execute(
        select(ImportJob)
        .where(or_(mentions(ImportJob.error), mentions(ImportJob.filename)))
        .with_for_update()
    )
    for job in jobs.scalars():
        job.error = redact(job.error, needles) if job.error else job.error
        job.filename = redact(job.filename, needles) if job.filename else job.filename
    await session.flush()


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
