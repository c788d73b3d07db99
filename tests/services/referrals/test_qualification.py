"""Qualification, rewards, the monthly cap, expiry and reversal, through the handlers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.referrals import qualification
from services.referrals.models import customers, referrals
from shared.events.loyalty import TierChanged
from shared.settings import Settings
from tests.services.referrals.delivery import (
    NOW,
    again,
    buy,
    code_of,
    deliver,
    outbox,
    purchase_event,
    refer,
    referral_of,
    refund_event,
    rewards_of,
    seed_programme,
    signup_event,
)

Sessions = async_sessionmaker[AsyncSession]


@pytest.mark.parametrize(("total_minor", "status"), [(5_000, "qualified"), (4_999, "unqualified")])
async def test_the_minimum_itself_qualifies_and_a_sen_less_does_not(
    sessions: Sessions, settings: Settings, total_minor: int, status: str
) -> None:
    await seed_programme(sessions)
    referrer, referee = await refer(sessions, settings)
    purchase = await buy(sessions, settings, referee, total_minor, NOW)
    referral = await referral_of(sessions, referee)
    assert referral.status == status
    assert referral.purchase_id == purchase.purchase_id
    rewards = await rewards_of(sessions, referral.id)
    if status == "unqualified":
        assert rewards == {}
        assert referral.closed_at is not None
        assert await outbox(sessions, "referral.rewarded") == []
        return
    assert referral.qualified_at is not None
    assert {role: (r.customer_id, r.points) for role, r in rewards.items()} == {
        "referrer": (referrer, 300),
        "referee": (referee, 100),
    }
    published = await outbox(sessions, "referral.rewarded")
    assert sorted((e["role"], e["points"], e["reward_id"]) for e in published) == sorted(
        (role, r.points, str(r.id)) for role, r in rewards.items()
    )
    [qualified] = await outbox(sessions, "referral.qualified")
    assert qualified["purchase_id"] == str(purchase.purchase_id)


@pytest.mark.parametrize(("offset", "status"), [(-1, "qualified"), (1, "expired")])
async def test_a_purchase_a_second_either_side_of_the_window_end(
    sessions: Sessions, settings: Settings, offset: int, status: str
) -> None:
    await seed_programme(sessions, qualify_within_days=30)
    signed_up = NOW - timedelta(days=29)  # the window is still open at signup
    _, referee = await refer(sessions, settings, at=signed_up)
    at = signed_up + timedelta(days=30, seconds=offset)
    await buy(sessions, settings, referee, 9_000, at)
    assert (await referral_of(sessions, referee)).status == status


async def test_the_window_end_itself_still_counts(sessions: Sessions, settings: Settings) -> None:
    await seed_programme(sessions, qualify_within_days=30)
    signed_up = NOW - timedelta(days=29)
    _, referee = await refer(sessions, settings, at=signed_up)
    await buy(sessions, settings, referee, 9_000, signed_up + timedelta(days=30))
    assert (await referral_of(sessions, referee)).status == "qualified"


async def test_the_hourly_job_expires_only_referrals_past_their_window(
    sessions: Sessions, settings: Settings
) -> None:
    await seed_programme(sessions, qualify_within_days=30)
    _, overdue = await refer(sessions, settings, at=NOW - timedelta(days=29))
    _, waiting = await refer(sessions, settings, at=NOW - timedelta(days=29))
    async with sessions() as session, session.begin():  # time passes for one of them
        await session.execute(
            update(customers)
            .where(customers.c.customer_id == overdue)
            .values(signed_up_at=datetime.now(UTC) - timedelta(days=30, seconds=1))
        )
    assert await qualification.expire_overdue(sessions, settings) == 1
    assert (await referral_of(sessions, overdue)).status == "expired"
    assert (await referral_of(sessions, waiting)).status == "pending"
    assert await qualification.expire_overdue(sessions, settings) == 0


async def test_the_monthly_cap_stops_the_referrers_points_not_the_friends(
    sessions: Sessions, settings: Settings
) -> None:
    await seed_programme(sessions, monthly_cap=1)
    referrer, first = await refer(sessions, settings)
    await buy(sessions, settings, first, 6_000, NOW)
    second = uuid.uuid4()
    await deliver(sessions, settings, signup_event(second, code=await code_of(sessions, referrer)))
    await buy(sessions, settings, second, 6_000, NOW)
    capped = await referral_of(sessions, second)
    assert capped.status == "qualified"
    assert "monthly cap of 1" in capped.note
    assert set(await rewards_of(sessions, capped.id)) == {"referee"}
    assert [e["role"] for e in await outbox(sessions, "referral.rewarded")] == [
        "referrer",
        "referee",
        "referee",
    ]


async def test_a_gold_referrer_earns_its_tiers_points(
    sessions: Sessions, settings: Settings
) -> None:
    await seed_programme(sessions, referrer_points_by_tier={"gold": 800})
    referrer, referee = await refer(sessions, settings)
    await deliver(
        sessions,
        settings,
        TierChanged(
            customer_id=referrer,
            previous_tier="silver",
            tier="gold",
            direction="up",
            changed_at=NOW,
        ),
    )
    await buy(sessions, settings, referee, 6_000, NOW)
    rewards = await rewards_of(sessions, (await referral_of(sessions, referee)).id)
    assert (rewards["referrer"].points, rewards["referee"].points) == (800, 100)


async def test_without_a_programme_the_referral_qualifies_with_nothing_to_award(
    sessions: Sessions, settings: Settings
) -> None:
    _, referee = await refer(sessions, settings)
    await buy(sessions, settings, referee, 1, NOW)
    referral = await referral_of(sessions, referee)
    assert (referral.status, referral.note) == ("qualified", "no programme in force")
    assert await rewards_of(sessions, referral.id) == {}
    assert len(await outbox(sessions, "referral.qualified")) == 1


async def test_evaluate_leaves_a_flagged_referral_alone_until_approved(
    sessions: Sessions, settings: Settings
) -> None:
    await seed_programme(sessions)
    _, referee = await refer(sessions, settings)
    referral_id = (await referral_of(sessions, referee)).id
    async with sessions() as session, session.begin():
        await session.execute(
            update(referrals).where(referrals.c.id == referral_id).values(status="flagged")
        )
    await buy(sessions, settings, referee, 6_000, NOW)
    assert (await referral_of(sessions, referee)).status == "flagged"
    async with sessions() as session, session.begin():
        await session.execute(
            update(referrals).where(referrals.c.id == referral_id).values(status="pending")
        )
        await qualification.evaluate(session, referral_id, now=NOW, settings=settings)
    assert (await referral_of(sessions, referee)).status == "qualified"


@pytest.mark.parametrize(
    ("refunded", "days_later", "reversed_"),
    [
        (1_001, 14, True),  # inside the window (its end included), 4,999 kept
        (1_000, 1, False),  # 5,000 kept: still the minimum
        (6_000, 15, False),  # a day after the return window
    ],
)
async def test_a_refund_of_the_qualifying_purchase(
    sessions: Sessions, settings: Settings, refunded: int, days_later: int, reversed_: bool
) -> None:
    await seed_programme(sessions)
    bought_at = NOW - timedelta(days=20)
    _, referee = await refer(sessions, settings, at=bought_at - timedelta(hours=1))
    purchase = await buy(sessions, settings, referee, 6_000, bought_at)
    refund = refund_event(purchase, refunded, bought_at + timedelta(days=days_later))
    await deliver(sessions, settings, refund)
    await deliver(sessions, settings, again(refund))  # the same refund, another event id
    referral = await referral_of(sessions, referee)
    rewards = await rewards_of(sessions, referral.id)
    published = await outbox(sessions, "referral.reversed")
    if not reversed_:
        assert referral.status == "qualified"
        assert {r.status for r in rewards.values()} == {"rewarded"}
        assert published == []
        return
    assert referral.status == "reversed"
    assert referral.closed_at is not None
    assert {r.status for r in rewards.values()} == {"reversed"}
    assert all(r.reversed_at is not None for r in rewards.values())
    assert sorted((e["reward_id"], e["points"], e["reason"]) for e in published) == sorted(
        (str(r.id), r.points, "qualifying purchase refunded") for r in rewards.values()
    )


async def test_small_refunds_add_up_to_a_reversal(sessions: Sessions, settings: Settings) -> None:
    await seed_programme(sessions)
    _, referee = await refer(sessions, settings, at=NOW - timedelta(days=2))
    purchase = await buy(sessions, settings, referee, 6_000, NOW - timedelta(days=1))
    await deliver(sessions, settings, refund_event(purchase, 600, NOW))
    assert (await referral_of(sessions, referee)).status == "qualified"
    await deliver(sessions, settings, refund_event(purchase, 600, NOW))
    assert (await referral_of(sessions, referee)).status == "reversed"
    assert len(await outbox(sessions, "referral.reversed")) == 2


async def test_a_later_purchase_does_not_decide_the_referral(
    sessions: Sessions, settings: Settings
) -> None:
    await seed_programme(sessions)
    _, referee = await refer(sessions, settings, at=NOW - timedelta(days=3))
    await buy(sessions, settings, referee, 100, NOW - timedelta(days=2))
    assert (await referral_of(sessions, referee)).status == "unqualified"
    await deliver(sessions, settings, purchase_event(referee, 90_000, datetime.now(UTC)))
    assert (await referral_of(sessions, referee)).status == "unqualified"
    assert await outbox(sessions, "referral.rewarded") == []
