"""Scoring's event handlers: idempotency on natural ids, merges, erasure, profile facts."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scoring import refit
from services.scoring.handlers import handlers
from services.scoring.models import customers, purchases, refunds
from shared.db.engine import create_engine, session_factory
from shared.db.migrations import migrate
from shared.events.contacts import (
    CustomerErased,
    CustomerMerged,
    CustomerSignedUp,
    CustomerUpdated,
    ProfileSnapshot,
)
from shared.events.envelope import Event
from shared.events.loyalty import PointsEarned, PointsRedeemed, TierChanged
from shared.events.purchases import PurchaseCompleted, PurchaseRefunded
from shared.settings import Settings
from tests.services.scoring.test_refit import MIGRATIONS, seed_shop

SETTINGS = Settings()
NOW = datetime.now(UTC)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(database_url)
    await migrate(engine, "scoring", MIGRATIONS)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


async def deliver(sessions: async_sessionmaker[AsyncSession], event: Event) -> None:
    """One delivery, as the consumer makes it, under a fresh event id each time."""
    async with sessions() as session, session.begin():
        await handlers(SETTINGS)[type(event)](session, event, event.to_envelope(source="test"))


def bought(
    customer: uuid.UUID, days_ago: int, total_minor: int = 4_000, **extra: Any
) -> PurchaseCompleted:
    return PurchaseCompleted(
        purchase_id=uuid.uuid4(),
        customer_id=customer,
        order_id=uuid.uuid4().hex,
        currency="MYR",
        total_minor=total_minor,
        purchased_at=NOW - timedelta(days=days_ago),
        **extra,
    )


def refund_of(purchase: PurchaseCompleted, amount: int) -> PurchaseRefunded:
    return PurchaseRefunded(
        refund_id=uuid.uuid4(),
        purchase_id=purchase.purchase_id,
        customer_id=purchase.customer_id,
        currency="MYR",
        amount_minor=amount,
        refunded_at=NOW,
    )


async def row_of(sessions: async_sessionmaker[AsyncSession], customer: uuid.UUID) -> Any:
    async with sessions() as session:
        return (
            await session.execute(select(customers).where(customers.c.customer_id == customer))
        ).one_or_none()


async def test_purchases_and_refunds_apply_once_per_natural_id(
    db: async_sessionmaker[AsyncSession],
) -> None:
    customer = uuid.uuid4()
    first = bought(customer, 10, store_id="kl-01")
    await deliver(db, first)
    await deliver(db, first)  # an outside system sent it again under a new event id
    second = bought(customer, 3, total_minor=6_000, channel="web")
    await deliver(db, second)
    refund = refund_of(second, 1_000)
    await deliver(db, refund)
    await deliver(db, refund)
    row = await row_of(db, customer)
    assert (row.orders, row.purchase_days) == (2, 2)
    assert row.spend_minor == 4_000 + 5_000
    assert row.repeat_spend_minor == 5_000
    assert row.stores == {"kl-01": 1}
    assert row.channels == {"pos": 1, "web": 1}
    async with db() as session:
        assert (await session.execute(select(func.count()).select_from(refunds))).scalar_one() == 1

    # A refund to zero takes the day away; one of a purchase never seen changes nothing.
    await deliver(db, refund_of(second, 9_999))
    await deliver(db, refund_of(bought(customer, 1), 500))
    row = await row_of(db, customer)
    assert (row.orders, row.purchase_days, row.spend_minor) == (1, 1, 4_000)
    assert row.last_day == row.first_day
    assert row.repeat_spend_minor == 0
    assert row.channels == {"pos": 1}


async def test_merge_folds_the_duplicate_into_the_survivor_once(
    db: async_sessionmaker[AsyncSession],
) -> None:
    await seed_shop(db, 60)
    await refit.scheduled_refit(db, SETTINGS)
    survivor, duplicate = uuid.uuid4(), uuid.uuid4()
    await deliver(
        db,
        CustomerSignedUp(
            customer_id=duplicate,
            profile=ProfileSnapshot(),
            source="pos",
            signed_up_at=NOW - timedelta(days=90),
        ),
    )
    await deliver(db, bought(survivor, 20))
    await deliver(db, bought(duplicate, 40, total_minor=1_000))
    await deliver(db, bought(duplicate, 20, total_minor=2_000))  # same day as the survivor's
    merge = CustomerMerged(
        survivor_id=survivor, merged_id=duplicate, profile=ProfileSnapshot(), merged_at=NOW
    )
    await deliver(db, merge)
    await deliver(db, merge)

    kept = await row_of(db, survivor)
    assert (kept.orders, kept.purchase_days) == (3, 2)
    assert kept.spend_minor == 7_000
    assert kept.repeat_spend_minor == 6_000  # both purchases of the later day
    assert kept.signed_up_at == NOW - timedelta(days=90)
    assert kept.churn_band is not None
    gone = await row_of(db, duplicate)
    assert (gone.status, gone.merged_into) == ("merged", survivor)
    assert (gone.orders, gone.spend_minor, gone.churn_band, gone.clv) == (0, 0, None, None)
    async with db() as session:
        owners = (
            await session.execute(
                select(purchases.c.customer_id).where(
                    purchases.c.customer_id.in_([survivor, duplicate])
                )
            )
        ).scalars()
        assert set(owners) == {survivor}

    # Later events for the duplicate apply to the survivor.
    await deliver(db, bought(duplicate, 0))
    await deliver(
        db,
        TierChanged(
            customer_id=duplicate, previous_tier=None, tier="gold", direction="up", changed_at=NOW
        ),
    )
    kept = await row_of(db, survivor)
    assert (kept.orders, kept.purchase_days, kept.tier) == (4, 3, "gold")
    assert (await row_of(db, duplicate)).orders == 0


async def test_erasure_stops_scoring_and_keeps_pseudonymous_facts(
    db: async_sessionmaker[AsyncSession],
) -> None:
    await seed_shop(db, 60)
    await refit.scheduled_refit(db, SETTINGS)
    customer = uuid.uuid4()
    await deliver(db, bought(customer, 30))
    await deliver(
        db,
        TierChanged(
            customer_id=customer, previous_tier=None, tier="silver", direction="up", changed_at=NOW
        ),
    )
    assert (await row_of(db, customer)).clv is not None

    await deliver(db, CustomerErased(customer_id=customer, erased_at=NOW))
    await deliver(db, bought(customer, 0))
    row = await row_of(db, customer)
    assert row.status == "erased"
    assert (row.tier, row.signed_up_at, row.published) == (None, None, None)
    assert (row.p_alive, row.churn_band, row.clv, row.rfm_segment, row.fit_id) == (None,) * 5
    assert (row.orders, row.purchase_days) == (2, 2)  # pseudonymous purchase facts stay


async def test_sign_up_and_tier_are_kept_for_segments(db: async_sessionmaker[AsyncSession]) -> None:
    customer = uuid.uuid4()
    joined = NOW - timedelta(days=5)
    await deliver(
        db,
        CustomerSignedUp(
            customer_id=customer, profile=ProfileSnapshot(), source="web", signed_up_at=joined
        ),
    )
    await deliver(
        db,
        TierChanged(
            customer_id=customer, previous_tier=None, tier="gold", direction="up", changed_at=NOW
        ),
    )
    row = await row_of(db, customer)
    assert (row.signed_up_at, row.tier, row.status) == (joined, "gold", "active")
    assert (row.orders, row.churn_band) == (0, None)  # no purchase, no scores


async def test_locale_and_points_balance_are_kept_for_segments(
    db: async_sessionmaker[AsyncSession],
) -> None:
    customer = uuid.uuid4()
    await deliver(
        db,
        CustomerSignedUp(
            customer_id=customer,
            profile=ProfileSnapshot(locale="ms-MY"),
            source="pos",
            signed_up_at=NOW - timedelta(days=3),
        ),
    )
    await deliver(
        db,
        CustomerUpdated(
            customer_id=customer,
            changed=["locale"],
            profile=ProfileSnapshot(locale="th-TH"),
            updated_at=NOW,
        ),
    )
    earned = PointsEarned(
        customer_id=customer,
        points=120,
        reason="purchase",
        available_at=NOW,
        balance=120,
        earned_at=NOW - timedelta(minutes=5),
    )
    redeemed = PointsRedeemed(
        customer_id=customer,
        points=100,
        redemption_id=uuid.uuid4(),
        status="reserved",
        voucher_code="RD-TEST",
        balance=20,
        redeemed_at=NOW,
    )
    await deliver(db, earned)
    await deliver(db, redeemed)
    await deliver(db, earned)  # a late copy of the older entry
    row = await row_of(db, customer)
    assert (row.locale, row.points_balance) == ("th-TH", 20)

    await deliver(db, CustomerErased(customer_id=customer, erased_at=NOW))
    row = await row_of(db, customer)
    assert (row.locale, row.points_balance) == (None, None)
