"""One batch of an import, decided in memory: which rows create, update or fail.

Rows apply in file order, as if each were its own request: a row is matched by email,
then phone, then card number, against the contacts the batch's identifiers found in the
database *and* those earlier rows of the batch created or changed. So a file that lists
one customer twice creates them once and then updates them, deterministically.

Pure: the caller fetched (and locked) the contacts and learnt which generated card
numbers are taken; this returns what to write and the events to queue, in row order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.contacts.import_lines import (
    SIGNED_UP,
    UPDATED,
    Clock,
    Prepared,
    contact_line,
    new_ids,
    outbox_line,
    profile_json,
    signed_up_json,
    updated_json,
)
from services.contacts.import_rows import RowError, ValidRow


@dataclass(slots=True, eq=False)
class ContactState:
    """A contact as the batch sees it."""

    id: str
    status: str
    given_name: str | None
    family_name: str | None
    email: str | None
    phone: str | None
    card_number: str | None
    birthday_month: int | None
    birthday_day: int | None
    birthday_year: int | None
    locale: str | None
    time_zone: str | None
    tags: list[str]
    attributes: dict[str, Any]
    signup_store: str | None
    created_offset: int | None = None
    """Row offset (the batch clock) that created it, None for an existing contact."""
    updated_offset: int | None = None
    line: bytes | None = None
    """The prepared COPY line of a new contact, while it is still what the row made."""
    dirty: bool = False
    original_identifiers: tuple[str | None, str | None, str | None] = (None, None, None)

    def identifiers(self) -> tuple[str | None, str | None, str | None]:
        return self.email, self.phone, self.card_number

    def profile(self) -> str:
        return profile_json(
            self.given_name,
            self.family_name,
            self.email,
            self.phone,
            self.card_number,
            (self.birthday_month, self.birthday_day, self.birthday_year),
            self.locale,
            self.time_zone,
            self.tags,
        )


@dataclass
class BatchPlan:
    """What one batch writes."""

    created: list[ContactState | bytes] = field(default_factory=list)
    """New contacts in row order: a prepared COPY line, or the contact when it changed."""
    updates: list[ContactState] = field(default_factory=list)
    events: list[bytes] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    updated: int = 0
    unchanged: int = 0
    clock: Clock = field(default_factory=lambda: Clock(0))

    @property
    def moved_identifiers(self) -> list[ContactState]:
        """Existing contacts whose email, phone or card changes (written in two steps)."""
        return [c for c in self.updates if c.identifiers() != c.original_identifiers]

    def insert_lines(self) -> list[bytes]:
        """COPY lines of the new contacts, as they stand at the end of the batch."""
        return [
            item if isinstance(item, bytes) else item.line or _contact_line(item, self.clock)
            for item in self.created
        ]

    def updated_at(self, contact: ContactState) -> datetime:
        assert contact.updated_offset is not None
        return self.clock.at(contact.updated_offset)


class CardsExhausted(RuntimeError):
    """More generated card numbers were taken than the batch had spares; retry with more."""


Holder = ContactState | int
"""What an identifier maps to within a batch: a contact, or the position in
`BatchPlan.created` of a new one that no later row has matched yet (most never are, so
they stay a prepared line and never become a ContactState)."""


def resolve(
    existing: list[ContactState],
    rows: list[ValidRow],
    prepared: list[Prepared],
    clock: Clock,
    taken: set[str],
    spare: list[str],
) -> BatchPlan:
    """Apply `rows` in order to `existing` (matched, locked contacts) and new contacts.

    `prepared[i]` holds row i's lines as a new customer (`import_lines.check_batch`);
    `taken` are generated cards someone already holds, `spare` free ones to use instead.
    """
    plan = BatchPlan(clock=clock)
    by_email: dict[str, Holder] = {}
    by_phone: dict[str, Holder] = {}
    by_card: dict[str, Holder] = {}
    for contact in existing:
        contact.original_identifiers = contact.identifiers()
        _index(contact, by_email, by_phone, by_card)
    spares = iter(spare)
    made: list[int] = []  # the row offset of each entry of plan.created

    def holder(value: str | None, index: dict[str, Holder]) -> ContactState | None:
        found = index.get(value) if value is not None else None
        if not isinstance(found, int):
            return found
        offset = made[found]
        contact = _materialise(rows[offset], prepared[offset], offset, plan.created[found])
        plan.created[found] = contact
        _index(contact, by_email, by_phone, by_card)
        return contact

    for offset, row in enumerate(rows):
        line, email, phone, card = row[0], row[3], row[4], row[5]
        matched: dict[str, tuple[str, ContactState]] = {}
        for column, value, index in (
            ("email", email, by_email),
            ("phone", phone, by_phone),
            ("card_number", card, by_card),
        ):
            if (found := holder(value, index)) is not None:
                matched.setdefault(found.id, (column, found))
        if len(matched) > 1:
            which = ", ".join(f"{column} -> {found.id}" for column, found in matched.values())
            plan.errors.append((line, f"matches different customers ({which})"))
            continue
        if matched:
            ((_, contact),) = matched.values()
            if contact.status != "active":
                plan.errors.append(
                    (line, f"matches customer {contact.id}, who was {contact.status}")
                )
                continue
            changed = _apply(contact, row, by_email, by_phone, by_card)
            if not changed:
                plan.unchanged += 1
                continue
            plan.updated += 1
            contact.updated_offset = offset
            contact.line = None
            if contact.created_offset is None and not contact.dirty:
                contact.dirty = True
                plan.updates.append(contact)
            plan.events.append(_updated(contact, changed, clock.stamp(offset)))
            continue
        position = len(plan.created)
        made.append(offset)
        _, generated, new_line, event_line = prepared[offset]
        if card is None and (generated is None or generated in taken or generated in by_card):
            # The card generated for this row is taken: a spare one, so new lines.
            contact = _materialise(row, prepared[offset], offset, new_line)
            spare_card = next((c for c in spares if c not in by_card), None)
            if spare_card is None:
                raise CardsExhausted("not enough spare card numbers for this batch")
            contact.card_number = spare_card
            contact.line = None
            plan.created.append(contact)
            _index(contact, by_email, by_phone, by_card)
            plan.events.append(_signed_up(contact, clock.stamp(offset)))
            continue
        plan.created.append(new_line)
        if email is not None:
            by_email[email] = position
        if phone is not None:
            by_phone[phone] = position
        key = card if card is not None else generated
        assert key is not None
        by_card[key] = position
        plan.events.append(event_line)
    return plan


def _materialise(
    row: ValidRow, prepared: Prepared, offset: int, line: ContactState | bytes
) -> ContactState:
    """The ContactState of a row that created a contact, as its prepared line has it."""
    if isinstance(line, ContactState):
        return line
    _, given, family, email, phone, card, born, locale, zone, tags, attributes, store = row
    month, day, year = born or (None, None, None)
    return ContactState(
        id=prepared[0],
        status="active",
        given_name=given,
        family_name=family,
        email=email,
        phone=phone,
        card_number=card if card is not None else prepared[1],
        birthday_month=month,
        birthday_day=day,
        birthday_year=year,
        locale=locale,
        time_zone=zone,
        tags=list(tags or ()),
        attributes=dict(attributes or ()),
        signup_store=store,
        created_offset=offset,
        updated_offset=offset,
        line=line,
    )


def _index(
    contact: ContactState,
    by_email: dict[str, Holder],
    by_phone: dict[str, Holder],
    by_card: dict[str, Holder],
) -> None:
    if contact.email is not None:
        by_email[contact.email] = contact
    if contact.phone is not None:
        by_phone[contact.phone] = contact
    if contact.card_number is not None:
        by_card[contact.card_number] = contact


def _apply(
    contact: ContactState,
    row: ValidRow,
    by_email: dict[str, Holder],
    by_phone: dict[str, Holder],
    by_card: dict[str, Holder],
) -> list[str]:
    """Set the row's given values; the names of the fields that changed (API spelling)."""
    _, given, family, email, phone, card, birthday, locale, zone, tags, attributes, _ = row
    changed: list[str] = []
    if given is not None and given != contact.given_name:
        contact.given_name = given
        changed.append("given_name")
    if family is not None and family != contact.family_name:
        contact.family_name = family
        changed.append("family_name")
    # An identifier given here is held by no other contact (else the row matched two).
    if email is not None and email != contact.email:
        if contact.email is not None:
            del by_email[contact.email]
        contact.email = email
        by_email[email] = contact
        changed.append("email")
    if phone is not None and phone != contact.phone:
        if contact.phone is not None:
            del by_phone[contact.phone]
        contact.phone = phone
        by_phone[phone] = contact
        changed.append("phone")
    if card is not None and card != contact.card_number:
        if contact.card_number is not None:
            del by_card[contact.card_number]
        contact.card_number = card
        by_card[card] = contact
        changed.append("card_number")
    if birthday is not None and birthday != (
        contact.birthday_month,
        contact.birthday_day,
        contact.birthday_year,
    ):
        contact.birthday_month, contact.birthday_day, contact.birthday_year = birthday
        changed.append("birthday")
    if locale is not None and locale != contact.locale:
        contact.locale = locale
        changed.append("locale")
    if zone is not None and zone != contact.time_zone:
        contact.time_zone = zone
        changed.append("time_zone")
    if tags is not None and list(tags) != contact.tags:
        contact.tags = list(tags)
        changed.append("tags")
    if attributes is not None:
        merged = contact.attributes | dict(attributes)
        if merged != contact.attributes:
            contact.attributes = merged
            changed.append("attributes")
    changed.sort()
    return changed


def _signed_up(contact: ContactState, at: str) -> bytes:
    (event_id,) = new_ids(1)
    payload = signed_up_json(event_id, contact.id, contact.profile(), contact.signup_store, at)
    return outbox_line(event_id, contact.id, SIGNED_UP, payload)


def _updated(contact: ContactState, changed: list[str], at: str) -> bytes:
    (event_id,) = new_ids(1)
    payload = updated_json(event_id, contact.id, changed, contact.profile(), at)
    return outbox_line(event_id, contact.id, UPDATED, payload)


def _contact_line(contact: ContactState, clock: Clock) -> bytes:
    assert contact.created_offset is not None and contact.updated_offset is not None
    return contact_line(
        contact.id,
        contact.given_name,
        contact.family_name,
        contact.email,
        contact.phone,
        contact.card_number,
        (contact.birthday_month, contact.birthday_day, contact.birthday_year),
        contact.locale,
        contact.time_zone,
        contact.tags,
        json.dumps(contact.attributes, ensure_ascii=False, separators=(",", ":")),
        contact.signup_store,
        clock.stamp(contact.created_offset),
        clock.stamp(contact.updated_offset),
    )
