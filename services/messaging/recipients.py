"""The recipients projection: what messaging knows about a customer, from events only.

Messaging never calls another service on the send path, so it keeps its own copy of the
contact details, locale, time zone, birthday and consents (contacts), tier, points and
expiring points (loyalty), scores and segment membership (scoring) and the last purchase.

Events on different topics arrive in no guaranteed order and may be redelivered, so every
update is guarded by the event time that last set the same facts (`facts_at`, see
migration 0003): an update applies only when its event is at least as recent, and a late
copy of an older event changes nothing. Times that only grow or shrink (`signed_up_at`,
`last_purchase_at`) need no guard: they take the earliest or latest seen.

A row appears on the first event that names the customer, whatever its type. Events
that name a customer merged away apply to its survivor (`survivor_of`). An erased
recipient keeps no personal data, and no later profile or consent event brings any back.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.messaging.models import recipients, segment_members
from shared.db import merges
from shared.events.contacts import ProfileSnapshot

ACTIVE, MERGED, ERASED = "active", merges.MERGED, "erased"

PERSONAL_FIELDS = (
    "given_name",
    "family_name",
    "email",
    "phone",
    "locale",
    "time_zone",
    "birth_month",
    "birth_day",
    "birth_year",
)
"""Everything from the contacts profile: dropped on erasure."""

PHONE_CHANNELS = ("sms", "whatsapp")
"""Channels addressed by the phone number: a new number clears their undeliverable mark."""

_TIME = sa.DateTime(timezone=True)


def _fact_time(key: str) -> sa.ColumnElement[datetime]:
    recorded = sa.cast(recipients.c.facts_at[key].astext, _TIME)
    return sa.func.coalesce(recorded, sa.cast(sa.literal("-infinity"), _TIME))


def _stamp(key: str, moment: datetime) -> sa.ColumnElement[Any]:
    """`facts_at` with `key` set to `moment` (an ISO string that casts back exactly)."""
    value = sa.func.jsonb_build_object(key, sa.cast(sa.literal(moment, _TIME), _TIME), type_=JSONB)
    return recipients.c.facts_at.op("||", return_type=JSONB)(value)


async def recipient(session: AsyncSession, customer_id: uuid.UUID) -> sa.Row[Any] | None:
    """The recipient row stored under `customer_id` (merged rows included), or None."""
    result = await session.execute(
        sa.select(recipients).where(recipients.c.customer_id == customer_id)
    )
    return result.one_or_none()


async def survivor_of(session: AsyncSession, customer_id: uuid.UUID) -> uuid.UUID:
    """The recipient that now stands for `customer_id` (itself unless merged away)."""
    return await merges.survivor_of(session, recipients, customer_id)


async def ensure(
    session: AsyncSession, customer_id: uuid.UUID, now: datetime, *, status: str = ACTIVE
) -> None:
    """Create the row on the first event naming the customer; an existing row stays."""
    await session.execute(
        insert(recipients)
        .values(
            customer_id=customer_id, status=status, consents={}, undeliverable={}, updated_at=now
        )
        .on_conflict_do_nothing(index_elements=[recipients.c.customer_id])
    )


async def _guarded_update(
    session: AsyncSession,
    customer_id: uuid.UUID,
    key: str,
    moment: datetime,
    values: Mapping[str, Any],
    now: datetime,
    *conditions: sa.ColumnElement[bool],
) -> bool:
    """Set `values` when the event at `moment` is not older than the facts' last event."""
    result = await session.execute(
        sa.update(recipients)
        .where(recipients.c.customer_id == customer_id, _fact_time(key) <= moment, *conditions)
        .values(**values, facts_at=_stamp(key, moment), updated_at=now)
        .returning(recipients.c.customer_id)
    )
    return result.first() is not None


def profile_values(profile: ProfileSnapshot) -> dict[str, Any]:
    """The projection's columns for a contacts profile snapshot."""
    birthday = profile.birthday
    return {
        "given_name": profile.given_name,
        "family_name": profile.family_name,
        "email": profile.email,
        "phone": profile.phone,
        "locale": profile.locale,
        "time_zone": profile.time_zone,
        "birth_month": birthday.month if birthday else None,
        "birth_day": birthday.day if birthday else None,
        "birth_year": birthday.year if birthday else None,
    }


def _undeliverable_after(profile: ProfileSnapshot) -> sa.ColumnElement[Any]:
    """A changed address is a new chance: its channels lose their undeliverable mark."""
    marks: sa.ColumnElement[Any] = recipients.c.undeliverable
    marks = sa.case(
        (
            recipients.c.email.is_distinct_from(profile.email),
            marks.op("-", return_type=JSONB)("email"),
        ),
        else_=marks,
    )
    for channel in PHONE_CHANNELS:
        marks = sa.case(
            (
                recipients.c.phone.is_distinct_from(profile.phone),
                marks.op("-", return_type=JSONB)(channel),
            ),
            else_=marks,
        )
    return marks


async def apply_profile(
    session: AsyncSession,
    customer_id: uuid.UUID,
    profile: ProfileSnapshot,
    moment: datetime,
    now: datetime,
) -> bool:
    """Take the profile snapshot unless a newer one is in, or the customer was erased."""
    await ensure(session, customer_id, now)
    values = profile_values(profile) | {"undeliverable": _undeliverable_after(profile)}
    return await _guarded_update(
        session, customer_id, "profile", moment, values, now, recipients.c.status == ACTIVE
    )


async def apply_signup(
    session: AsyncSession,
    customer_id: uuid.UUID,
    profile: ProfileSnapshot,
    signed_up_at: datetime,
    now: datetime,
) -> None:
    """The signup's profile, and the earliest signup time seen."""
    await apply_profile(session, customer_id, profile, signed_up_at, now)
    await session.execute(
        sa.update(recipients)
        .where(recipients.c.customer_id == customer_id)
        .values(
            signed_up_at=sa.func.least(
                sa.func.coalesce(recipients.c.signed_up_at, signed_up_at), signed_up_at
            )
        )
    )


async def apply_consent(
    session: AsyncSession,
    customer_id: uuid.UUID,
    channel: str,
    status: str,
    moment: datetime,
    now: datetime,
) -> bool:
    """One channel's consent, unless a newer change for that channel is in."""
    await ensure(session, customer_id, now)
    consents = recipients.c.consents.op("||", return_type=JSONB)(
        sa.func.jsonb_build_object(channel, status, type_=JSONB)
    )
    return await _guarded_update(
        session,
        customer_id,
        f"consent:{channel}",
        moment,
        {"consents": consents},
        now,
        recipients.c.status == ACTIVE,
    )


async def apply_points(
    session: AsyncSession, customer_id: uuid.UUID, balance: int, moment: datetime, now: datetime
) -> bool:
    """Loyalty's balance after an entry made at `moment`."""
    await ensure(session, customer_id, now)
    return await _guarded_update(
        session, customer_id, "points", moment, {"points_balance": balance}, now
    )


async def apply_expired(
    session: AsyncSession,
    customer_id: uuid.UUID,
    balance: int,
    expired_at: datetime,
    now: datetime,
) -> None:
    """The balance after an expiry; a reminder about points due by then is now moot."""
    await apply_points(session, customer_id, balance, expired_at, now)
    await _guarded_update(
        session,
        customer_id,
        "expiring",
        expired_at,
        {"expiring_points": None, "expiring_at": None},
        now,
        recipients.c.expiring_at <= expired_at,
    )


async def apply_expiring(
    session: AsyncSession,
    customer_id: uuid.UUID,
    points: int,
    expires_at: datetime,
    moment: datetime,
    now: datetime,
) -> bool:
    """Points about to expire, from loyalty's notice sent at `moment` (its envelope time)."""
    await ensure(session, customer_id, now)
    values = {"expiring_points": points, "expiring_at": expires_at}
    return await _guarded_update(session, customer_id, "expiring", moment, values, now)


async def apply_tier(
    session: AsyncSession,
    customer_id: uuid.UUID,
    tier: str | None,
    moment: datetime,
    now: datetime,
) -> bool:
    """The member's tier after a change at `moment`."""
    await ensure(session, customer_id, now)
    return await _guarded_update(session, customer_id, "tier", moment, {"tier": tier}, now)


async def apply_scores(
    session: AsyncSession,
    customer_id: uuid.UUID,
    scores: Mapping[str, Any],
    moment: datetime,
    now: datetime,
) -> bool:
    """Scoring's churn band and risk, CLV and RFM segment as of `moment`."""
    await ensure(session, customer_id, now)
    return await _guarded_update(session, customer_id, "scores", moment, scores, now)


async def apply_segment(
    session: AsyncSession,
    customer_id: uuid.UUID,
    segment_id: uuid.UUID,
    segment_name: str,
    *,
    member: bool,
    moment: datetime,
    now: datetime,
) -> bool:
    """Enter or leave a segment, unless a newer enter or exit of that segment is in."""
    await ensure(session, customer_id, now)
    if not await _guarded_update(session, customer_id, f"segment:{segment_id}", moment, {}, now):
        return False
    if member:
        await session.execute(
            insert(segment_members)
            .values(
                segment_id=segment_id,
                customer_id=customer_id,
                segment_name=segment_name,
                entered_at=moment,
            )
            .on_conflict_do_update(
                index_elements=[segment_members.c.segment_id, segment_members.c.customer_id],
                set_={"segment_name": segment_name},
            )
        )
    else:
        await session.execute(
            sa.delete(segment_members).where(
                segment_members.c.segment_id == segment_id,
                segment_members.c.customer_id == customer_id,
            )
        )
    return True


async def apply_purchase(
    session: AsyncSession, customer_id: uuid.UUID, purchased_at: datetime, now: datetime
) -> None:
    """The latest purchase seen (in any order)."""
    await ensure(session, customer_id, now)
    await session.execute(
        sa.update(recipients)
        .where(recipients.c.customer_id == customer_id)
        .values(
            last_purchase_at=sa.func.greatest(
                sa.func.coalesce(recipients.c.last_purchase_at, purchased_at), purchased_at
            ),
            updated_at=now,
        )
    )
