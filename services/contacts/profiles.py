"""Profile rules: signup, change, and the snapshot other services learn from events.

Functions here flush but never commit: the request (or import batch) that calls them
owns the transaction, so a profile change and its event commit together.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.contacts import errors, repository
from services.contacts.models import SCHEMA, Contact
from services.contacts.normalize import (
    InvalidValue,
    generate_card,
    normalize_card,
    normalize_email,
    normalize_locale,
    normalize_phone,
    normalize_tags,
    normalize_time_zone,
)
from services.contacts.schemas import ConsentOut, ContactCreate, ContactFields, ContactOut
from shared.events.contacts import (
    Birthday,
    CustomerSignedUp,
    CustomerUpdated,
    ProfileSnapshot,
)
from shared.pipeline.outbox import add_event

SOURCE = "contacts"


@dataclass(frozen=True)
class ProfileRules:
    """Deployment choices the rules depend on (from settings)."""

    default_region: str = "MY"
    card_prefix: str = "88"
    card_length: int = 12


def clean_fields(fields: ContactFields, rules: ProfileRules, present: set[str]) -> dict[str, Any]:
    """Normalised column values for the fields the client sent; 422 names a bad one."""
    values: dict[str, Any] = {}
    normalizers = {
        "email": normalize_email,
        "phone": lambda raw: normalize_phone(raw, rules.default_region),
        "card_number": normalize_card,
        "locale": normalize_locale,
        "time_zone": normalize_time_zone,
    }
    for name in present:
        raw = getattr(fields, name)
        try:
            if name in normalizers:
                values[name] = None if raw is None else normalizers[name](raw)
            elif name == "tags":
                values[name] = normalize_tags(raw or [])
            elif name == "birthday":
                values["birthday_month"] = raw.month if raw else None
                values["birthday_day"] = raw.day if raw else None
                values["birthday_year"] = raw.year if raw else None
            elif name == "social":
                values[name] = raw.model_dump(exclude_none=True) if raw else {}
            elif name == "attributes":
                values[name] = {k: _json_value(v) for k, v in (raw or {}).items()}
            else:
                values[name] = raw
        except InvalidValue as exc:
            raise errors.invalid(f"body.{name}", str(exc)) from exc
    return values


def _json_value(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def snapshot(contact: Contact) -> ProfileSnapshot:
    """What profile events carry."""
    birthday = None
    if contact.birthday_month and contact.birthday_day:
        birthday = Birthday(
            month=contact.birthday_month, day=contact.birthday_day, year=contact.birthday_year
        )
    return ProfileSnapshot(
        given_name=contact.given_name,
        family_name=contact.family_name,
        email=contact.email,
        phone=contact.phone,
        card_number=contact.card_number,
        birthday=birthday,
        locale=contact.locale,
        time_zone=contact.time_zone,
        tags=list(contact.tags or []),
    )


def to_out(contact: Contact, consents: list[Any] | None = None) -> ContactOut:
    """The API view of a contact."""
    return ContactOut(
        id=contact.id,
        status=contact.status,
        given_name=contact.given_name,
        family_name=contact.family_name,
        email=contact.email,
        phone=contact.phone,
        card_number=contact.card_number,
        birthday=snapshot(contact).birthday,
        locale=contact.locale,
        time_zone=contact.time_zone,
        social=dict(contact.social or {}),
        tags=list(contact.tags or []),
        attributes=dict(contact.attributes or {}),
        signup_source=contact.signup_source,
        signup_store=contact.signup_store,
        referral_code=contact.referral_code,
        merged_into=contact.merged_into,
        consents={
            c.channel: ConsentOut(
                channel=c.channel,
                status=c.status,
                source=c.source,
                proof=c.proof,
                changed_at=c.changed_at,
            )
            for c in consents or []
        },
        created_at=contact.created_at,
        updated_at=contact.updated_at,
    )


async def _refuse_duplicates(
    session: AsyncSession, values: dict[str, Any], exclude: uuid.UUID | None = None
) -> None:
    identifiers = {k: v for k, v in values.items() if k in repository.IDENTIFIERS and v is not None}
    holders = await repository.holders_of(session, identifiers, exclude)
    if holders:
        raise errors.duplicate(holders)


async def _flush_unique(session: AsyncSession, contact: Contact, values: dict[str, Any]) -> None:
    """Flush in a savepoint; a unique violation from a concurrent writer becomes a 409."""
    try:
        async with session.begin_nested():
            session.add(contact)
            await session.flush()
    except IntegrityError as exc:
        await _refuse_duplicates(session, values, exclude=contact.id)
        raise errors.invalid("body", "conflicting identifiers") from exc


async def sign_up(
    session: AsyncSession,
    request: ContactCreate,
    rules: ProfileRules,
    *,
    store_id: str | None,
    now: datetime | None = None,
) -> Contact:
    """Create a customer and queue `customer.signed_up`; 409 names an existing holder."""
    now = now or datetime.now(UTC)
    values = clean_fields(
        request, rules, set(request.model_fields_set) & set(ContactFields.model_fields)
    )
    await _refuse_duplicates(session, values)
    generated = "card_number" not in values or values["card_number"] is None
    for _ in range(5):
        if generated:
            values["card_number"] = generate_card(rules.card_prefix, rules.card_length)
            if await repository.find_by_identifier(session, "card_number", values["card_number"]):
                continue
        break
    defaults: dict[str, Any] = {"social": {}, "tags": [], "attributes": {}}
    contact = Contact(
        id=uuid.uuid4(),
        status="active",
        signup_source=request.source,
        signup_store=store_id,
        referral_code=request.referral_code.strip().upper() if request.referral_code else None,
        created_at=now,
        updated_at=now,
        **(defaults | values),
    )
    await _flush_unique(session, contact, values)
    await add_event(
        session,
        SCHEMA,
        CustomerSignedUp(
            customer_id=contact.id,
            profile=snapshot(contact),
            source=request.source,
            store_id=store_id,
            referral_code=contact.referral_code,
            signed_up_at=now,
        ),
        source=SOURCE,
    )
    return contact


async def update(
    session: AsyncSession,
    contact: Contact,
    request: ContactFields,
    rules: ProfileRules,
    *,
    now: datetime | None = None,
) -> list[str]:
    """Apply a partial change and queue `customer.updated`; returns the changed fields."""
    if contact.status != "active":
        raise errors.gone(contact.id, contact.status, contact.merged_into)
    values = clean_fields(request, rules, set(request.model_fields_set))
    await _refuse_duplicates(session, values, exclude=contact.id)
    changed = sorted(
        {
            "birthday" if key.startswith("birthday_") else key
            for key, value in values.items()
            if getattr(contact, key) != value
        }
    )
    if not changed:
        return []
    for key, value in values.items():
        setattr(contact, key, value)
    contact.updated_at = now or datetime.now(UTC)
    await _flush_unique(session, contact, values)
    await add_event(
        session,
        SCHEMA,
        CustomerUpdated(
            customer_id=contact.id,
            changed=changed,
            profile=snapshot(contact),
            updated_at=contact.updated_at,
        ),
        source=SOURCE,
    )
    return changed
