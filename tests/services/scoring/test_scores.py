"""Scores move as purchases arrive; `customer.scored` only on material changes."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scoring import refit, scores
from services.scoring.handlers import handlers
from services.scoring.models import customers
from shared.db.engine import create_engine, session_factory
from shared.db.migrations import migrate
from shared.events.envelope import Event
from shared.events.purchases import PurchaseCompleted, PurchaseRefunded
from shared.settings import Settings
from tests.services.scoring.test_refit import MIGRATIONS, seed_shop

SETTINGS = Settings()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(database_url)
    await migrate(engine, "scoring", MIGRATIONS)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


async def deliver(sessions: async_sessionmaker[AsyncSession], event: Event) -> None:
    async with sessions() as session, session.begin():
        await handlers(SETTINGS)[type(event)](session, event, event.to_envelope(source="test"))


def bought(customer: uuid.UUID, days_ago: float, total_minor: int = 5_000) -> PurchaseCompleted:
    return PurchaseCompleted(
        purchase_id=uuid.uuid4(),
        customer_id=customer,
        order_id=uuid.uuid4().hex,
        currency="MYR",
        total_minor=total_minor,
        purchased_at=datetime.now(UTC) - timedelta(days=days_ago),
    )


async def row_of(sessions: async_sessionmaker[AsyncSession], customer: uuid.UUID) -> Any:
    async with sessions() as session:
        return (
            await session.execute(select(customers).where(customers.c.customer_id == customer))
        ).one()


async def scored_events(
    sessions: async_sessionmaker[AsyncSession], customer: uuid.UUID
) -> list[dict[str, Any]]:
    async with sessions() as session:
        rows = await session.execute(
            text(
                "SELECT payload FROM scoring.outbox"
                " WHERE event_type = 'customer.scored' AND key = :key ORDER BY id"
            ),
            {"key": str(customer)},
        )
        return [json.loads(payload)["data"] for (payload,) in rows]


async def test_scores_move_after_a_purchase_and_events_follow_material_changes(
    db: async_sessionmaker[AsyncSession],
) -> None:
    await seed_shop(db, 400)
    assert await refit.scheduled_refit(db, SETTINGS) == 400
    customer = uuid.uuid4()
    # A regular who bought every two weeks for a year, then stopped six months ago.
    for days_ago in range(540, 180, -14):
        await deliver(db, bought(customer, days_ago))
    lapsed = await row_of(db, customer)
    assert lapsed.churn_band == "high", lapsed
    events = await scored_events(db, customer)
    assert events[-1]["churn_band"] == "high"
    count = len(events)

    # A small purchase on a day already counted: CLV barely moves, no event.
    same_day = bought(customer, 190, total_minor=100)
    await deliver(db, same_day)
    assert await scored_events(db, customer) == events
    # They come back: P(alive) jumps, the band drops, and that is news.
    await deliver(db, bought(customer, 0))
    back = await row_of(db, customer)
    assert back.p_alive > lapsed.p_alive
    assert back.expected_purchases > lapsed.expected_purchases
    assert back.churn_band == "low"
    after = await scored_events(db, customer)
    assert len(after) == count + 1
    assert after[-1]["previous_churn_band"] == "high"
    assert after[-1]["churn_band"] == "low"
    assert back.published["churn_band"] == "low"


async def test_customers_without_purchases_have_no_scores(
    db: async_sessionmaker[AsyncSession],
) -> None:
    await seed_shop(db, 100)
    await refit.scheduled_refit(db, SETTINGS)
    only_refunded = uuid.uuid4()
    purchase = bought(only_refunded, 3)
    await deliver(db, purchase)
    assert (await row_of(db, only_refunded)).churn_band is not None
    await deliver(
        db,
        PurchaseRefunded(
            refund_id=uuid.uuid4(),
            purchase_id=purchase.purchase_id,
            customer_id=only_refunded,
            currency="MYR",
            amount_minor=purchase.total_minor,
            refunded_at=datetime.now(UTC),
        ),
    )
    row = await row_of(db, only_refunded)
    assert (row.purchase_days, row.churn_band, row.clv, row.rfm_segment) == (0, None, None, None)
    assert row.published is None


def test_churn_bands_by_lowest_risk() -> None:
    bands = {"low": 0.0, "medium": 0.3, "high": 0.6}
    assert scores.churn_band(0.0, bands) == "low"
    assert scores.churn_band(0.29, bands) == "low"
    assert scores.churn_band(0.3, bands) == "medium"
    assert scores.churn_band(0.99, bands) == "high"


def test_material_changes() -> None:
    published = {"churn_band": "low", "rfm_segment": "Loyal", "clv": 100.0}
    same = scores.Scores(churn_risk=0.1, churn_band="low", rfm_segment="Loyal", clv=105.0)
    assert not scores.is_material(published, same, 0.1)
    assert scores.is_material(published, scores.Scores(**{**vars(same), "clv": 111.0}), 0.1)
    assert scores.is_material(published, scores.Scores(**{**vars(same), "churn_band": "high"}), 0.1)
    assert scores.is_material(
        published, scores.Scores(**{**vars(same), "rfm_segment": "Lost"}), 0.1
    )
    assert scores.is_material(None, same, 0.1)
    assert not scores.is_material(published, scores.Scores(), 0.1)


def test_model_inputs_follow_the_lifetimes_conventions() -> None:
    row = SimpleNamespace(
        purchase_days=4,
        first_day=date(2026, 1, 1),
        last_day=date(2026, 1, 29),
        repeat_spend_minor=9_000,
        currency="MYR",
    )
    inputs = scores.model_inputs([row], date(2026, 3, 12), "weeks")
    assert inputs.frequency.tolist() == [3.0]
    assert inputs.recency.tolist() == [4.0]
    assert inputs.T.tolist() == [10.0]
    assert inputs.monetary.tolist() == [30.0]
    assert scores.per_unit_discount(0.1, "days") == pytest.approx(1.1 ** (1 / 365) - 1)
