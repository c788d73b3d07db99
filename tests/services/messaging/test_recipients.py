"""The recipients projection, fed through the routing table on a migrated database.

Each event is delivered as the consumer runner delivers it: the handler in a transaction
of its own. Late copies (older events arriving after newer ones) must change nothing.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.messaging import recipients as projection
from services.messaging.handlers import handlers
from services.messaging.models import recipients, segment_members
from shared.events.contacts import (
    Birthday,
    ConsentChanged,
    CustomerSignedUp,
    CustomerUpdated,
    ProfileSnapshot,
)
from shared.events.envelope import Event
from shared.events.loyalty import (
    PointsAdjusted,
    PointsEarned,
    PointsExpired,
    PointsExpiring,
    TierChanged,
)
from shared.events.purchases import PurchaseCompleted
from shared.events.scoring import CustomerScored, SegmentEntered, SegmentExited
from shared.settings import Settings

Sessions = async_sessionmaker[AsyncSession]
T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


async def deliver(
    sessions: Sessions, settings: Settings, event: Event, time: datetime | None = None
) -> None:
    handler = handlers(settings)[type(event)]
    async with sessions() as session, session.begin():
        await handler(session, event, event.to_envelope(source="test", time=time))


async def row(sessions: Sessions, customer_id: uuid.UUID) -> Any:
    async with sessions() as session:
        found = await projection.recipient(session, customer_id)
    assert found is not None
    return found


def profile(**overrides: Any) -> ProfileSnapshot:
    values: dict[str, Any] = {
        "given_name": "Aisyah",
        "family_name": "Rahman",
        "email": "aisyah@example.my",
        "phone": "+60123456789",
        "birthday": Birthday(month=2, day=29, year=1992),
        "locale": "ms-MY",
        "time_zone": "Asia/Kuala_Lumpur",
    }
    return ProfileSnapshot(**(values | overrides))


def signup(customer: uuid.UUID, at: datetime = T0, **overrides: Any) -> CustomerSignedUp:
    return CustomerSignedUp(
        customer_id=customer, profile=profile(**overrides), source="pos", signed_up_at=at
    )


def updated(customer: uuid.UUID, at: datetime, **overrides: Any) -> CustomerUpdated:
    return CustomerUpdated(
        customer_id=customer, changed=list(overrides), profile=profile(**overrides), updated_at=at
    )


async def test_signup_builds_the_profile_with_birthday_locale_and_zone(
    sessions: Sessions, settings: Settings
) -> None:
    customer = uuid.uuid4()
    await deliver(sessions, settings, signup(customer))
    got = await row(sessions, customer)
    assert got.status == "active"
    assert (got.given_name, got.family_name) == ("Aisyah", "Rahman")
    assert (got.email, got.phone) == ("aisyah@example.my", "+60123456789")
    assert (got.locale, got.time_zone) == ("ms-MY", "Asia/Kuala_Lumpur")
    assert (got.birth_month, got.birth_day, got.birth_year) == (2, 29, 1992)
    assert got.signed_up_at == T0
    assert got.consents == {} and got.undeliverable == {}


async def test_a_late_profile_copy_changes_nothing(sessions: Sessions, settings: Settings) -> None:
    customer = uuid.uuid4()
    await deliver(sessions, settings, signup(customer))
    await deliver(sessions, settings, updated(customer, T0 + timedelta(hours=2), locale="en"))
    await deliver(sessions, settings, updated(customer, T0 + timedelta(hours=1), locale="th-TH"))
    # The signup itself, redelivered late under a new event id, changes nothing either.
    await deliver(sessions, settings, signup(customer, given_name="Old"))
    got = await row(sessions, customer)
    assert got.locale == "en"
    assert got.given_name == "Aisyah"
    assert got.signed_up_at == T0


async def test_profile_before_signup_and_earliest_signup_wins(
    sessions: Sessions, settings: Settings
) -> None:
    customer = uuid.uuid4()
    await deliver(sessions, settings, updated(customer, T0 + timedelta(days=1), locale="th-TH"))
    await deliver(sessions, settings, signup(customer, at=T0))
    got = await row(sessions, customer)
    assert got.locale == "th-TH"
    assert got.signed_up_at == T0


async def test_a_new_address_clears_its_undeliverable_mark(
    sessions: Sessions, settings: Settings
) -> None:
    customer = uuid.uuid4()
    await deliver(sessions, settings, signup(customer))
    async with sessions() as session, session.begin():
        await session.execute(
            update(recipients)
            .where(recipients.c.customer_id == customer)
            .values(undeliverable={"email": "bounced", "sms": "invalid number"})
        )
    await deliver(
        sessions, settings, updated(customer, T0 + timedelta(hours=1), email="new@example.my")
    )
    got = await row(sessions, customer)
    assert got.undeliverable == {"sms": "invalid number"}


async def test_consents_per_channel_and_late_copies(sessions: Sessions, settings: Settings) -> None:
    customer = uuid.uuid4()

    def consent(channel: str, status: str, at: datetime) -> ConsentChanged:
        return ConsentChanged(
            customer_id=customer,
            channel=channel,
            status=status,
            source="pos",
            changed_at=at,
        )

    await deliver(sessions, settings, consent("email", "granted", T0 + timedelta(hours=2)))
    await deliver(sessions, settings, consent("sms", "pending", T0))
    await deliver(sessions, settings, consent("email", "revoked", T0 + timedelta(hours=1)))
    assert (await row(sessions, customer)).consents == {"email": "granted", "sms": "pending"}
    await deliver(sessions, settings, consent("email", "revoked", T0 + timedelta(hours=3)))
    assert (await row(sessions, customer)).consents == {"email": "revoked", "sms": "pending"}


async def test_loyalty_tier_points_and_expiring(sessions: Sessions, settings: Settings) -> None:
    customer = uuid.uuid4()
    expires = T0 + timedelta(days=30)
    await deliver(
        sessions,
        settings,
        PointsEarned(
            customer_id=customer,
            points=120,
            reason="purchase",
            available_at=T0,
            balance=320,
            earned_at=T0 + timedelta(hours=2),
        ),
    )
    await deliver(
        sessions,
        settings,
        PointsAdjusted(
            customer_id=customer, points=-20, reason="late", balance=200, adjusted_at=T0
        ),
    )
    await deliver(
        sessions,
        settings,
        TierChanged(
            customer_id=customer, previous_tier="silver", tier="gold", direction="up", changed_at=T0
        ),
    )
    await deliver(
        sessions,
        settings,
        PointsExpiring(customer_id=customer, points=80, expires_at=expires),
        time=T0 + timedelta(hours=3),
    )
    got = await row(sessions, customer)
    assert got.points_balance == 320  # the older adjustment came late and changed nothing
    assert got.tier == "gold"
    assert (got.expiring_points, got.expiring_at) == (80, expires)

    # An older tier change arriving late does not take the tier back.
    await deliver(
        sessions,
        settings,
        TierChanged(
            customer_id=customer,
            previous_tier=None,
            tier="silver",
            direction="up",
            changed_at=T0 - timedelta(days=1),
        ),
    )
    await deliver(
        sessions,
        settings,
        PointsExpired(customer_id=customer, points=80, balance=240, expired_at=expires),
    )
    got = await row(sessions, customer)
    assert got.tier == "gold"
    assert got.points_balance == 240
    assert (got.expiring_points, got.expiring_at) == (None, None)

    # A late copy of the reminder, sent before the expiry, does not bring it back.
    await deliver(
        sessions,
        settings,
        PointsExpiring(customer_id=customer, points=80, expires_at=expires),
        time=T0 + timedelta(hours=3),
    )
    assert (await row(sessions, customer)).expiring_points is None


def scored(customer: uuid.UUID, band: str, at: datetime, clv: float) -> CustomerScored:
    return CustomerScored(
        customer_id=customer,
        churn_risk=0.8 if band == "high" else 0.1,
        churn_band=band,
        clv=clv,
        expected_purchases=1.5,
        rfm_segment="At risk" if band == "high" else "Champions",
        scored_at=at,
    )


async def test_scores_keep_the_newest(sessions: Sessions, settings: Settings) -> None:
    customer = uuid.uuid4()
    await deliver(sessions, settings, scored(customer, "high", T0 + timedelta(days=1), 40.0))
    await deliver(sessions, settings, scored(customer, "low", T0, 900.0))
    got = await row(sessions, customer)
    assert (got.churn_band, got.churn_risk, got.clv, got.rfm_segment) == (
        "high",
        0.8,
        40.0,
        "At risk",
    )


async def members(sessions: Sessions, segment: uuid.UUID) -> set[uuid.UUID]:
    async with sessions() as session:
        found = await session.execute(
            select(segment_members.c.customer_id).where(segment_members.c.segment_id == segment)
        )
    return set(found.scalars())


async def test_segment_membership_in_any_order(sessions: Sessions, settings: Settings) -> None:
    segment, ann, ben = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()

    def entered(customer: uuid.UUID, at: datetime) -> SegmentEntered:
        return SegmentEntered(
            customer_id=customer, segment_id=segment, segment_name="VIP", entered_at=at
        )

    def exited(customer: uuid.UUID, at: datetime) -> SegmentExited:
        return SegmentExited(
            customer_id=customer, segment_id=segment, segment_name="VIP", exited_at=at
        )

    await deliver(sessions, settings, entered(ann, T0))
    await deliver(sessions, settings, entered(ben, T0))
    assert await members(sessions, segment) == {ann, ben}
    await deliver(sessions, settings, exited(ben, T0 + timedelta(days=2)))
    await deliver(sessions, settings, entered(ben, T0 + timedelta(days=1)))  # late copy
    assert await members(sessions, segment) == {ann}
    await deliver(sessions, settings, entered(ben, T0 + timedelta(days=3)))
    assert await members(sessions, segment) == {ann, ben}


async def test_last_purchase_is_the_latest_in_any_order(
    sessions: Sessions, settings: Settings
) -> None:
    customer = uuid.uuid4()

    def bought(at: datetime) -> PurchaseCompleted:
        return PurchaseCompleted(
            purchase_id=uuid.uuid4(),
            customer_id=customer,
            order_id=uuid.uuid4().hex,
            currency="MYR",
            total_minor=1_000,
            purchased_at=at,
        )

    await deliver(sessions, settings, bought(T0 + timedelta(days=2)))
    await deliver(sessions, settings, bought(T0))
    assert (await row(sessions, customer)).last_purchase_at == T0 + timedelta(days=2)
