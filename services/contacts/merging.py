"""Merging a duplicate customer into a survivor.

The survivor keeps its own non-empty fields and takes the duplicate's where it has none;
identifiers move only into empty slots (each is unique, so the duplicate lets go first);
tags are united, attributes and social handles merged with the survivor winning a clash;
per channel the consent changed most recently wins, and the duplicate's consent history
moves to the survivor, so it stays complete. The duplicate remains as an id that points
at the survivor (`status = merged`), without personal data, and `customer.merged` tells
the other services to move its balances and histories.

The rules (`merged_values`, `winning_consents`) are pure; `merge` flushes, never commits.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from services.contacts import errors, repository
from services.contacts.gdpr import clear_personal_data
from services.contacts.models import SCHEMA, Consent, ConsentRecord, Contact
from services.contacts.profiles import SOURCE, snapshot
from shared.events.contacts import ConsentChanged, CustomerMerged, CustomerUpdated
from shared.http.problems import Problem
from shared.pipeline.outbox import add_event

log = structlog.get_logger(__name__)

# Columns filled from the duplicate when the survivor's is empty. Signup source, store and
# time stay the survivor's: they record how that customer record came to be.
FILLED = (
    "given_name",
    "family_name",
    *repository.IDENTIFIERS,
    "locale",
    "time_zone",
    "referral_code",
)
BIRTHDAY = ("birthday_month", "birthday_day", "birthday_year")
MERGED_COLUMNS = (*FILLED, *BIRTHDAY, "social", "tags", "attributes")


@dataclass(frozen=True)
class ConsentState:
    """One channel's current consent, as the merge rule sees it."""

    status: str
    source: str
    proof: str | None
    changed_at: datetime


def columns(contact: Contact) -> dict[str, Any]:
    """The mergeable column values of a contact, as plain data."""
    return {name: getattr(contact, name) for name in MERGED_COLUMNS}


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def merged_values(survivor: Mapping[str, Any], duplicate: Mapping[str, Any]) -> dict[str, Any]:
    """The survivor's columns that change: gaps filled from the duplicate, collections merged."""
    values: dict[str, Any] = {}
    for name in FILLED:
        if _empty(survivor.get(name)) and not _empty(duplicate.get(name)):
            values[name] = duplicate[name]
    # A birthday is one value: taken whole when the survivor has none, and its year
    # added when both name the same day and only the duplicate knows the year.
    month, day, year = (survivor.get(name) for name in BIRTHDAY)
    other_month, other_day, other_year = (duplicate.get(name) for name in BIRTHDAY)
    if not (month and day) and other_month and other_day:
        values.update(birthday_month=other_month, birthday_day=other_day, birthday_year=other_year)
    elif (month, day) == (other_month, other_day) and year is None and other_year is not None:
        values["birthday_year"] = other_year
    tags = sorted(set(survivor.get("tags") or []) | set(duplicate.get("tags") or []))
    for name, merged in (
        ("tags", tags),
        ("social", {**(duplicate.get("social") or {}), **(survivor.get("social") or {})}),
        (
            "attributes",
            {**(duplicate.get("attributes") or {}), **(survivor.get("attributes") or {})},
        ),
    ):
        if merged != (survivor.get(name) or type(merged)()):
            values[name] = merged
    return values


def changed_fields(values: Mapping[str, Any]) -> list[str]:
    """API field names of changed columns (the birthday columns are one field)."""
    return sorted({"birthday" if name in BIRTHDAY else name for name in values})


def winning_consents(
    survivor: Mapping[str, ConsentState], duplicate: Mapping[str, ConsentState]
) -> dict[str, ConsentState]:
    """Channels where the duplicate's consent wins: the survivor has none, or an older one.

    On equal times the survivor's stands: nothing says the duplicate's is newer.
    """
    return {
        channel: state
        for channel, state in duplicate.items()
        if channel not in survivor or state.changed_at > survivor[channel].changed_at
    }


def merge_into_itself(contact_id: uuid.UUID) -> Problem:
    """409: a customer cannot absorb itself."""
    return Problem(
        409,
        "merge-into-itself",
        "Merge into itself",
        f"Customer {contact_id} cannot be merged into itself; name another duplicate.",
    )


async def merge(
    session: AsyncSession,
    survivor_id: uuid.UUID,
    duplicate_id: uuid.UUID,
    *,
    now: datetime | None = None,
) -> Contact:
    """Fold `duplicate_id` into `survivor_id`; returns the survivor.

    Repeating a merge that already happened returns the survivor and publishes nothing,
    so a client's retry is harmless even without an Idempotency-Key.
    """
    if survivor_id == duplicate_id:
        raise merge_into_itself(survivor_id)
    now = now or datetime.now(UTC)
    # Both rows locked in one global order, so two merges of one pair cannot deadlock.
    locked = {
        cid: await repository.get(session, cid, lock=True)
        for cid in sorted((survivor_id, duplicate_id))
    }
    survivor, duplicate = locked[survivor_id], locked[duplicate_id]
    if survivor is None:
        raise errors.not_found(survivor_id)
    if duplicate is None:
        raise errors.not_found(duplicate_id)
    if survivor.status == "active" and duplicate.merged_into == survivor.id:
        return survivor  # done before: a retry
    for contact in (survivor, duplicate):
        if contact.status != "active":
            raise errors.gone(contact.id, contact.status, contact.merged_into)

    values = merged_values(columns(survivor), columns(duplicate))
    # The duplicate lets go of its identifiers (unique indexes) before the survivor takes them.
    clear_personal_data(duplicate)
    duplicate.status = "merged"
    duplicate.merged_into = survivor.id
    duplicate.updated_at = now
    await session.flush()
    for name, value in values.items():
        setattr(survivor, name, value)
    if values:
        survivor.updated_at = now
    await session.flush()
    await _repoint_merged(session, duplicate.id, survivor.id)
    consent_changes = await _merge_consents(session, survivor.id, duplicate.id)

    profile = snapshot(survivor)
    await add_event(
        session,
        SCHEMA,
        CustomerMerged(
            survivor_id=survivor.id, merged_id=duplicate.id, profile=profile, merged_at=now
        ),
        source=SOURCE,
    )
    if values:
        await add_event(
            session,
            SCHEMA,
            CustomerUpdated(
                customer_id=survivor.id,
                changed=changed_fields(values),
                profile=profile,
                updated_at=now,
            ),
            source=SOURCE,
        )
    for channel, state in sorted(consent_changes.items()):
        await add_event(
            session,
            SCHEMA,
            ConsentChanged(
                customer_id=survivor.id,
                channel=channel,
                status=state.status,
                source=state.source,
                changed_at=state.changed_at,
            ),
            source=SOURCE,
        )
    log.info(
        "contacts.customer.merged",
        survivor_id=str(survivor.id),
        merged_id=str(duplicate.id),
        changed=changed_fields(values),
    )
    return survivor


async def _merge_consents(
    session: AsyncSession, survivor_id: uuid.UUID, duplicate_id: uuid.UUID
) -> dict[str, ConsentState]:
    """Apply the consent rule; returns the channels whose status the survivor now has anew."""
    rows = await repository.consents_of(session, [survivor_id, duplicate_id])
    ours = {row.channel: row for row in rows if row.contact_id == survivor_id}
    theirs = {row.channel: row for row in rows if row.contact_id == duplicate_id}
    winners = winning_consents(
        {channel: _state(row) for channel, row in ours.items()},
        {channel: _state(row) for channel, row in theirs.items()},
    )
    for row in theirs.values():
        await session.delete(row)
    await session.flush()
    status_changes: dict[str, ConsentState] = {}
    for channel, state in winners.items():
        current = ours.get(channel)
        if current is None or current.status != state.status:
            status_changes[channel] = state
        if current is None:
            current = Consent(contact_id=survivor_id, channel=channel)
            session.add(current)
        current.status = state.status
        current.source = state.source
        current.proof = state.proof
        current.changed_at = state.changed_at
    # The history moves whole: the regulator's record of the person spans both profiles.
    await session.execute(
        update(ConsentRecord)
        .where(ConsentRecord.contact_id == duplicate_id)
        .values(contact_id=survivor_id)
        .execution_options(synchronize_session=False)
    )
    await session.flush()
    return status_changes


def _state(row: Consent) -> ConsentState:
    return ConsentState(row.status, row.source, row.proof, row.changed_at)


async def _repoint_merged(
    session: AsyncSession, duplicate_id: uuid.UUID, survivor_id: uuid.UUID
) -> None:
    # Customers merged into the duplicate earlier now point at the survivor directly, so
    # `merged_into` is never a chain to follow.
    await session.execute(
        update(Contact)
        .where(Contact.merged_into == duplicate_id)
        .values(merged_into=survivor_id)
        .execution_options(synchronize_session=False)
    )
