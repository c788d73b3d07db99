"""Consent rules: recording a permission, double opt-in, confirmation and unsubscribe.

The `consents` row is the latest statement per customer and channel; `consent_history`
keeps every statement ever received, including late ones that no longer decide anything.
A statement older than the current one (an offline till syncing late, an old import) is
*stale*: it goes into the history but leaves the current state alone. `consent.changed`
is published only when the current status really changes.

Every writer locks the contact row first, which serialises one customer's consent changes
(and lets a missing `consents` row be inserted without racing another insert). Functions
here flush but never commit: the request owns the transaction, so the state, its history
and its events commit together.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal, cast, get_args

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from services.contacts import consent_tokens, errors, repository
from services.contacts.consent_tokens import ConsentToken
from services.contacts.models import SCHEMA, Consent, ConsentRecord, Contact
from services.contacts.profiles import SOURCE
from shared.events.contacts import (
    Channel,
    ConsentChanged,
    ConsentConfirmationRequested,
    ConsentStatus,
)
from shared.http.problems import Problem
from shared.pipeline.outbox import add_event
from shared.settings import Settings

CHANNELS: tuple[Channel, ...] = get_args(Channel)
ClientSource = Literal["pos", "web", "import", "api", "unsubscribe-link"]
"""Where a statement recorded through the API came from (`unsubscribe-link`: an opt-out
that arrived another way, e.g. a mail provider's report)."""
Outcome = Literal["changed", "unchanged", "stale", "already_granted"]

CLOCK_SKEW = timedelta(minutes=5)
"""Times this far ahead of the server's clock (a till's drifting clock) are taken as now."""
DOUBLE_OPT_IN_CHANNELS: dict[Channel, Literal["email", "phone"]] = {
    "email": "email",
    "sms": "phone",
    "whatsapp": "phone",
}
"""Channels whose address we hold. LINE and push consent is given inside the app (following
the official account, the OS permission prompt): record it directly as `granted`."""
MAX_MERGE_HOPS = 8
"""How far a link follows merged duplicates to their survivor."""


@dataclass(frozen=True)
class ConsentChange:
    """One statement about a customer's permission on a channel."""

    channel: Channel
    status: ConsentStatus
    source: str
    proof: str | None
    changed_at: datetime
    double_opt_in: bool = False


@dataclass(frozen=True)
class Decision:
    """What a statement does to the current state (see `decide`)."""

    outcome: Outcome
    status: ConsentStatus
    """The status recorded: `pending` for a double opt-in grant."""
    write_current: bool
    write_history: bool
    publish_change: bool
    request_confirmation: bool


@dataclass(frozen=True)
class Recorded:
    """The result of a statement: the decision, the current row and the history entry."""

    decision: Decision
    current: Consent | None
    record: ConsentRecord | None


def effective_time(changed_at: datetime | None, now: datetime) -> datetime:
    """When a statement took effect: `now` by default; 422 for a time in the future."""
    if changed_at is None:
        return now
    if changed_at.tzinfo is None:
        raise errors.invalid("body.changed_at", "give a time zone, e.g. 2026-01-31T09:30:00Z")
    if changed_at > now + CLOCK_SKEW:
        raise errors.invalid("body.changed_at", "cannot be in the future")
    return min(changed_at.astimezone(UTC), now)


def decide(
    current: ConsentStatus | None, current_at: datetime | None, change: ConsentChange
) -> Decision:
    """The effect of `change` given the current status and when it was stated (pure)."""
    if change.double_opt_in and current == "granted":
        # Already confirmed: asking again would only take away a consent the customer gave.
        return _no_write("already_granted", "granted")
    status: ConsentStatus = "pending" if change.double_opt_in else change.status
    if current_at is not None and change.changed_at < current_at:
        return Decision(
            "stale",
            status,
            write_current=False,
            write_history=True,
            publish_change=False,
            request_confirmation=False,
        )
    changed = current != status
    return Decision(
        "changed" if changed else "unchanged",
        status,
        write_current=True,
        write_history=True,
        publish_change=changed,
        request_confirmation=change.double_opt_in,
    )


def _no_write(outcome: Outcome, status: ConsentStatus) -> Decision:
    return Decision(
        outcome,
        status,
        write_current=False,
        write_history=False,
        publish_change=False,
        request_confirmation=False,
    )


def address_of(contact: Contact, channel: Channel) -> str | None:
    """The address a confirmation on `channel` goes to, or None."""
    column = DOUBLE_OPT_IN_CHANNELS.get(channel)
    if column is None:
        return None
    address: str | None = getattr(contact, column)
    return address


async def load_contact(
    session: AsyncSession, contact_id: uuid.UUID, *, follow_merged: bool = False
) -> Contact:
    """The contact, locked; 404 when unknown, 409 when merged (unless followed) or erased."""
    contact = await repository.get(session, contact_id, lock=True)
    hops = 0
    while (
        follow_merged
        and contact is not None
        and contact.status == "merged"
        and hops < MAX_MERGE_HOPS
    ):
        # Links in old messages name the duplicate; the survivor is the same customer.
        if contact.merged_into is None:
            break
        contact = await repository.get(session, contact.merged_into, lock=True)
        hops += 1
    if contact is None:
        raise errors.not_found(contact_id)
    if contact.status != "active":
        raise errors.gone(contact.id, contact.status, contact.merged_into)
    return contact


async def record(
    session: AsyncSession,
    settings: Settings,
    contact: Contact,
    change: ConsentChange,
    *,
    now: datetime | None = None,
) -> Recorded:
    """Record a statement: history, current state and events as `decide` says.

    `contact` must have been loaded with `load_contact` (locked, active). A double opt-in
    grant is stored as `pending` and queues `consent.confirmation_requested`.
    """
    now = now or datetime.now(UTC)
    address = None
    if change.double_opt_in:
        address = _confirmation_address(contact, change)
    current = await _current(session, contact.id, change.channel)
    decision = decide(
        _status(current) if current else None, current.changed_at if current else None, change
    )
    return await _apply(session, settings, contact, current, change, decision, address, now)


async def confirm(
    session: AsyncSession, settings: Settings, token: ConsentToken, *, now: datetime | None = None
) -> Recorded:
    """Turn a pending consent into `granted`; harmless when already granted."""
    now = now or datetime.now(UTC)
    contact = await load_contact(session, token.contact_id, follow_merged=True)
    address = address_of(contact, token.channel)
    if token.address_hash and (
        address is None or consent_tokens.address_hash(address) != token.address_hash
    ):
        raise Problem(
            409,
            "consent-address-changed",
            "Address changed",
            "The customer's address changed since this link was sent; ask for a new one.",
        )
    current = await _current(session, contact.id, token.channel)
    if current is not None and current.status == "granted":
        return Recorded(_no_write("unchanged", "granted"), current, None)
    if current is None or current.status != "pending":
        raise Problem(
            409,
            "consent-not-pending",
            "Nothing to confirm",
            f"The {token.channel} consent is not awaiting confirmation "
            f"({current.status if current else 'never asked'}); it was not changed.",
        )
    change = ConsentChange(
        token.channel, "granted", "confirmation-link", f"double opt-in token {token.token_id}", now
    )
    decision = decide("pending", current.changed_at, change)
    return await _apply(session, settings, contact, current, change, decision, None, now)


async def unsubscribe(
    session: AsyncSession, settings: Settings, token: ConsentToken, *, now: datetime | None = None
) -> Recorded | None:
    """Revoke the token's channel; None when the customer was erased (nothing to revoke)."""
    now = now or datetime.now(UTC)
    try:
        contact = await load_contact(session, token.contact_id, follow_merged=True)
    except Problem as exc:
        if exc.status == 409:  # erased: we keep no address to send to any more
            return None
        raise
    current = await _current(session, contact.id, token.channel)
    if current is not None and current.status == "revoked":
        # Mail providers may POST more than once: repeats write nothing.
        return Recorded(_no_write("unchanged", "revoked"), current, None)
    change = ConsentChange(
        token.channel, "revoked", "unsubscribe-link", f"unsubscribe token {token.token_id}", now
    )
    decision = decide(
        _status(current) if current else None, current.changed_at if current else None, change
    )
    if decision.outcome == "stale":
        # The row is newer than the server's clock (clock skew); a click always wins.
        decision = replace(decision, outcome="changed", write_current=True, publish_change=True)
    return await _apply(session, settings, contact, current, change, decision, None, now)


def _confirmation_address(contact: Contact, change: ConsentChange) -> str:
    if change.status != "granted":
        raise errors.invalid("body.double_opt_in", "double opt-in applies to `granted` only")
    if change.channel not in DOUBLE_OPT_IN_CHANNELS:
        raise errors.invalid(
            "body.double_opt_in",
            f"double opt-in is not available on {change.channel}: the app's own permission "
            "is the confirmation there; record it as granted",
        )
    address = address_of(contact, change.channel)
    if address is None:
        kind = DOUBLE_OPT_IN_CHANNELS[change.channel]
        raise errors.invalid(
            "body.double_opt_in", f"the customer has no {kind} to send the confirmation to"
        )
    return address


async def _apply(
    session: AsyncSession,
    settings: Settings,
    contact: Contact,
    current: Consent | None,
    change: ConsentChange,
    decision: Decision,
    address: str | None,
    now: datetime,
) -> Recorded:
    entry = None
    if decision.write_history:
        entry = ConsentRecord(
            contact_id=contact.id,
            channel=change.channel,
            status=decision.status,
            source=change.source,
            proof=change.proof,
            changed_at=change.changed_at,
            recorded_at=now,
        )
        session.add(entry)
    if decision.write_current:
        if current is None:
            current = Consent(contact_id=contact.id, channel=change.channel)
            session.add(current)
        current.status = decision.status
        current.source = change.source
        current.proof = change.proof
        current.changed_at = change.changed_at
    await session.flush()
    if decision.publish_change:
        await add_event(
            session,
            SCHEMA,
            ConsentChanged(
                customer_id=contact.id,
                channel=change.channel,
                status=decision.status,
                source=change.source,
                changed_at=change.changed_at,
            ),
            source=SOURCE,
        )
    if decision.request_confirmation and address is not None:
        token, _ = consent_tokens.issue(
            settings, "confirm", contact.id, change.channel, address=address, now=now
        )
        await add_event(
            session,
            SCHEMA,
            ConsentConfirmationRequested(
                customer_id=contact.id,
                channel=change.channel,
                address=address,
                locale=contact.locale,
                confirmation_token=token,
                confirm_url=consent_tokens.confirm_url(settings, token),
                requested_at=now,
            ),
            source=SOURCE,
        )
    return Recorded(decision, current, entry)


def _status(row: Consent) -> ConsentStatus:
    if row.status not in get_args(ConsentStatus):
        raise ValueError(f"unknown consent status in the database: {row.status!r}")
    return cast(ConsentStatus, row.status)


# Queries. They belong in `repository.py` by the house rule; they sit here until that
# module takes them (it is being edited in parallel).


async def _current(session: AsyncSession, contact_id: uuid.UUID, channel: str) -> Consent | None:
    statement = (
        select(Consent)
        .where(Consent.contact_id == contact_id, Consent.channel == channel)
        .with_for_update()
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def history(
    session: AsyncSession,
    contact_id: uuid.UUID,
    *,
    channel: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[ConsentRecord], str | None]:
    """One page of a customer's consent history, newest statement first, and the next cursor.

    ValueError when `cursor` was not made here.
    """
    statement = select(ConsentRecord).where(ConsentRecord.contact_id == contact_id)
    if channel:
        statement = statement.where(ConsentRecord.channel == channel)
    if cursor:
        statement = statement.where(
            tuple_(ConsentRecord.changed_at, ConsentRecord.id) < _decode_cursor(cursor)
        )
    statement = statement.order_by(ConsentRecord.changed_at.desc(), ConsentRecord.id.desc())
    rows = list((await session.execute(statement.limit(limit + 1))).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, _encode_cursor(rows[-1]) if more and rows else None


def _encode_cursor(entry: ConsentRecord) -> str:
    raw = f"{entry.changed_at.isoformat()}|{entry.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, int]:
    padded = cursor + "=" * (-len(cursor) % 4)
    changed, _, entry_id = base64.urlsafe_b64decode(padded.encode()).decode().partition("|")
    moment = datetime.fromisoformat(changed)
    if moment.tzinfo is None:
        raise ValueError("cursor time without zone")
    return moment, int(entry_id)
