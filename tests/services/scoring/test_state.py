"""Incremental per-customer state against a from-scratch recomputation.

Over random sequences of purchases (on both sides of local midnight), partial and full
refunds, over-refunds, redeliveries and a merge, delivered through the service's handlers
against the real database: the stored aggregates always equal `state.summarize` of what
the test itself sent, and equal a recomputation from the stored purchase rows.

Hypothesis drives a sync test; each example runs in its own event loop with its own
engine, on one migrated database per test, and uses its own customer ids.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scoring import state
from services.scoring.handlers import handlers
from services.scoring.models import customers
from shared.db.engine import create_engine, session_factory
from shared.db.migrations import migrate
from shared.events.contacts import CustomerMerged, ProfileSnapshot
from shared.events.envelope import Event
from shared.events.purchases import PurchaseCompleted, PurchaseRefunded
from shared.settings import Settings

MIGRATIONS = Path("services/scoring/migrations")
SETTINGS = Settings()
BASE = datetime(2026, 6, 1, 15, 30, tzinfo=UTC)  # 23:30 in Kuala Lumpur
STORES = [None, "kl-01", "bkk-02"]
CHANNELS = ["pos", "web"]

Step = tuple[str, int, int, int]
steps = st.lists(
    st.one_of(
        # (kind, customer 0/1 or a purchase index, amount or days ago, minutes or store)
        st.tuples(st.just("purchase"), st.integers(0, 1), st.integers(0, 20), st.integers(0, 120)),
        st.tuples(st.just("refund"), st.integers(0, 9), st.integers(1, 12_000), st.integers(0, 1)),
        st.tuples(st.just("redeliver_purchase"), st.integers(0, 9), st.just(0), st.just(0)),
        st.tuples(st.just("redeliver_refund"), st.integers(0, 9), st.just(0), st.just(0)),
        st.tuples(st.just("merge"), st.just(0), st.just(0), st.just(0)),
    ),
    min_size=1,
    max_size=25,
)


@pytest.fixture
async def migrated_url(database_url: str) -> str:
    engine = create_engine(database_url)
    try:
        await migrate(engine, "scoring", MIGRATIONS)
    finally:
        await engine.dispose()
    return database_url


@dataclass
class Sent:
    """One purchase as the test knows it."""

    event: PurchaseCompleted
    owner: int
    refunded: int = 0


@dataclass
class History:
    """What the example sent, to redeliver and to compute the expected state from."""

    ids: tuple[uuid.UUID, uuid.UUID] = field(default_factory=lambda: (uuid.uuid4(), uuid.uuid4()))
    purchases: list[Sent] = field(default_factory=list)
    refunds: list[PurchaseRefunded] = field(default_factory=list)
    merged: bool = False

    def expected(self, owner: int) -> state.Aggregates:
        mine = [p for p in self.purchases if p.owner == owner]
        return state.summarize(
            state.PurchaseFacts(
                day=state.local_day(p.event.purchased_at, SETTINGS.scoring_time_zone),
                purchased_at=p.event.purchased_at,
                total_minor=p.event.total_minor,
                refunded_minor=p.refunded,
                store_id=p.event.store_id,
                channel=p.event.channel,
            )
            for p in mine
        )


async def deliver(sessions: async_sessionmaker[AsyncSession], event: Event) -> None:
    handler = handlers(SETTINGS)[type(event)]
    async with sessions() as session, session.begin():
        await handler(session, event, event.to_envelope(source="test"))


def purchase_event(history: History, owner: int, days_ago: int, minutes: int) -> Sent:
    # Amounts from the step's numbers so a shrunk example stays readable.
    return Sent(
        PurchaseCompleted(
            purchase_id=uuid.uuid4(),
            customer_id=history.ids[owner],
            store_id=STORES[(days_ago + minutes) % len(STORES)],
            order_id=uuid.uuid4().hex,
            currency="MYR",
            total_minor=1_000 * (minutes % 7) + 250 * days_ago,
            channel=CHANNELS[minutes % 2],
            purchased_at=BASE - timedelta(days=days_ago) + timedelta(minutes=minutes),
        ),
        owner=owner,
    )


async def apply(sessions: async_sessionmaker[AsyncSession], history: History, step: Step) -> None:
    kind, a, b, c = step
    if kind == "purchase":
        sent = purchase_event(history, a, b, c)
        if history.merged:
            sent.owner = 0
        history.purchases.append(sent)
        await deliver(sessions, sent.event)
    elif kind == "redeliver_purchase" and history.purchases:
        await deliver(sessions, history.purchases[a % len(history.purchases)].event)
    elif kind == "refund" and history.purchases:
        target = history.purchases[a % len(history.purchases)]
        refund = PurchaseRefunded(
            refund_id=uuid.uuid4(),
            purchase_id=target.event.purchase_id,
            customer_id=target.event.customer_id,
            currency="MYR",
            # c = 1: refund whatever is left, to reach zero (or beyond: capped).
            amount_minor=target.event.total_minor - target.refunded + (b % 3) if c else b,
            refunded_at=BASE,
        )
        history.refunds.append(refund)
        target.refunded = min(target.event.total_minor, target.refunded + refund.amount_minor)
        await deliver(sessions, refund)
    elif kind == "redeliver_refund" and history.refunds:
        await deliver(sessions, history.refunds[a % len(history.refunds)])
    elif kind == "merge":
        event = CustomerMerged(
            survivor_id=history.ids[0],
            merged_id=history.ids[1],
            profile=ProfileSnapshot(),
            merged_at=BASE,
        )
        if not history.merged:
            history.merged = True
            for sent in history.purchases:
                sent.owner = 0
        await deliver(sessions, event)


async def stored(session: AsyncSession, customer_id: uuid.UUID) -> state.Aggregates:
    row = (
        await session.execute(select(customers).where(customers.c.customer_id == customer_id))
    ).one_or_none()
    return state.Aggregates() if row is None else state.Aggregates.of_row(row)


async def run_example(url: str, plan: list[Step]) -> None:
    engine = create_engine(url, pool_size=2)
    sessions = session_factory(engine)
    history = History()
    try:
        for step in plan:
            await apply(sessions, history, step)
            async with sessions() as session:
                for owner, customer_id in enumerate(history.ids):
                    kept = await stored(session, customer_id)
                    assert kept == history.expected(owner), (step, owner)
                    rebuilt = state.summarize(await state.purchases_of(session, customer_id))
                    assert kept == rebuilt, (step, owner)
    finally:
        await engine.dispose()


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=steps)
@example(  # a later purchase, an earlier one that becomes the first day, refunds to zero
    plan=[
        ("purchase", 0, 2, 10),
        ("purchase", 0, 2, 45),  # same local day
        ("purchase", 0, 5, 40),  # after local midnight: a day later than its UTC date
        ("refund", 2, 0, 1),  # the first day's only purchase refunded to zero
        ("refund", 0, 300, 0),
        ("redeliver_refund", 0, 0, 0),
        ("purchase", 1, 9, 3),
        ("merge", 0, 0, 0),
        ("merge", 0, 0, 0),
        ("redeliver_purchase", 3, 0, 0),
        ("refund", 3, 0, 1),
    ]
)
def test_incremental_state_equals_recomputation(migrated_url: str, plan: list[Step]) -> None:
    asyncio.run(run_example(migrated_url, plan))


def test_summarize_counts_days_and_repeat_spend() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)

    def bought(
        day: int, total: int, refunded: int = 0, store: str | None = "s"
    ) -> state.PurchaseFacts:
        return state.PurchaseFacts(
            day=date(2026, 1, day),
            purchased_at=at + timedelta(days=day),
            total_minor=total,
            refunded_minor=refunded,
            store_id=store,
            channel="pos",
        )

    summary = state.summarize(
        [bought(3, 500), bought(3, 700, 200), bought(5, 900), bought(1, 400, 400), bought(8, 0)]
    )
    # Day 1 was refunded to zero: it is not a purchase day and not the first day.
    assert summary.first_day == date(2026, 1, 3)
    assert summary.last_day == date(2026, 1, 8)
    assert summary.purchase_days == 3
    assert summary.orders == 4
    assert summary.spend_minor == 500 + 500 + 900
    assert summary.repeat_spend_minor == 900
    assert summary.stores == {"s": 4}
    assert state.summarize([bought(2, 300, 300)]) == state.Aggregates()
