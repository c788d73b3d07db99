"""The batch purchase handler leaves exactly what recording purchases one by one leaves.

Two migrated databases get the same programme (a per-day cap, tier multipliers, a tier
ladder, a stamp card) and the same random runs of purchases: one applied per event by
`purchases.record_purchase` (the HTTP path's function), one by `purchase_batch`. Runs
mix several purchases of one customer (so a purchase can lift a tier that the next one
earns at, or reach the day's cap), redeliveries, a second purchase id for an order already
seen, a member merged away, and a member in debt. Every table the purchase path writes
must come out the same, and so must the events it publishes.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.loyalty import ledger, merging, purchases
from services.loyalty.purchase_batch import _Pending, apply_purchases
from shared.db.engine import create_engine, session_factory
from shared.db.migrations import migrate
from shared.events.purchases import PurchaseCompleted, PurchaseLine
from tests.support.database import fresh_database

MIGRATIONS = Path("services/loyalty/migrations")
POLICY = purchases.Policy(return_window=timedelta(days=7), expiry_months=12)
NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
RULES = {
    "base_rates": {"MYR": "1"},
    "category_multipliers": {"beauty": "2"},
    "tier_multipliers": {"gold": "1.5"},
    "per_day_cap": 400,
}
SETUP = [
    "INSERT INTO loyalty.earning_rules (effective_from, rules, created_at)"
    " VALUES ('2020-01-01', CAST(:rules AS jsonb), now())",
    "INSERT INTO loyalty.tiers (name, rank, basis, threshold, window_days, earn_multiplier,"
    " discount_percent, created_at) VALUES ('gold', 1, 'spend', 50000, 365, 1.5, 5, now())",
    "INSERT INTO loyalty.stamp_card_definitions (id, name, categories, stamps_required,"
    " reward_description, voucher_valid_days, active, created_at) VALUES"
    " ('7a0c9bd8-3d5e-4a4f-9b1e-3a4c3b2d1e0f', 'coffee', ARRAY['coffee'], 3, 'free coffee',"
    " 30, true, now())",
]

# A purchase: (customer 0-3, total in sen, days ago, category, repeat: 0 new, 1 same
# event again, 2 a new purchase id for an order already sent).
Item = tuple[int, int, int, str, int]
items = st.tuples(
    st.integers(0, 3),
    st.integers(0, 40_000),
    st.integers(0, 2),
    st.sampled_from(["coffee", "beauty", "grocery"]),
    st.sampled_from([0, 0, 0, 1, 2]),
)
plans = st.lists(st.lists(items, min_size=1, max_size=12), min_size=1, max_size=4)


async def migrated(url: str) -> None:
    engine = create_engine(url)
    try:
        await migrate(engine, "loyalty", MIGRATIONS)
        async with session_factory(engine)() as session, session.begin():
            for statement in SETUP:
                await session.execute(text(statement), {"rules": json.dumps(RULES)})
    finally:
        await engine.dispose()


@pytest.fixture
async def twin_urls(postgres_server: str) -> Any:
    async with fresh_database(postgres_server) as one, fresh_database(postgres_server) as two:
        await migrated(one)
        await migrated(two)
        yield one, two


def events_of(plan: list[list[Item]], customers: list[uuid.UUID]) -> list[list[PurchaseCompleted]]:
    sent: list[PurchaseCompleted] = []
    runs = []
    for run in plan:
        events = []
        for who, total, days_ago, category, repeat in run:
            if repeat == 1 and sent:
                event = sent[total % len(sent)]
            elif repeat == 2 and sent:
                event = sent[total % len(sent)].model_copy(update={"purchase_id": uuid.uuid4()})
            else:
                event = PurchaseCompleted(
                    purchase_id=uuid.uuid4(),
                    customer_id=customers[who],
                    store_id="kl-01",
                    order_id=uuid.uuid4().hex,
                    currency="MYR",
                    total_minor=total,
                    lines=[
                        PurchaseLine(
                            sku=f"{category}-1",
                            category=category,
                            quantity=1 + total % 3,
                            unit_price_minor=total // (1 + total % 3),
                        )
                    ],
                    purchased_at=NOW - timedelta(days=days_ago, minutes=len(sent)),
                )
            sent.append(event)
            events.append(event)
        runs.append(events)
    return runs


async def prepare(session: AsyncSession, customers: list[uuid.UUID]) -> None:
    """Customer 3 was merged into customer 0; customer 1 owes 50 points."""
    await session.execute(
        text(
            "INSERT INTO loyalty.members (customer_id, status, balance, debt, merged_into,"
            " updated_at) VALUES (:id, 'merged', 0, 0, :into, now())"
        ),
        {"id": customers[3], "into": customers[0]},
    )
    await ledger.lock_member(session, customers[1], NOW)
    await ledger.debit(
        session,
        customers[1],
        kind="adjust",
        points=50,
        reference=f"setup:{customers[1]}",
        now=NOW,
        available_only=False,
        allow_debt=True,
    )


async def one_by_one(session: AsyncSession, run: list[PurchaseCompleted]) -> None:
    for event in run:
        survivor = await merging.survivor_of(session, event.customer_id)
        await purchases.record_purchase(
            session,
            event.model_copy(update={"customer_id": survivor}),
            POLICY,
            origin="event:test",
            now=NOW,
        )


async def batched(session: AsyncSession, run: list[PurchaseCompleted]) -> None:
    await apply_purchases(
        session, [_Pending(event, "event:test") for event in run], POLICY, now=NOW
    )


SNAPSHOT = {
    "members": "SELECT customer_id, status, tier, balance, debt FROM loyalty.members"
    " WHERE customer_id = ANY(:ids) ORDER BY customer_id",
    "purchases": "SELECT * FROM loyalty.purchases WHERE customer_id = ANY(:ids) ORDER BY id",
    "ledger": "SELECT customer_id, kind, points, reference, available_at, expires_at"
    " FROM loyalty.ledger WHERE customer_id = ANY(:ids) ORDER BY customer_id, id",
    "lots": "SELECT customer_id, points, remaining, available_at, expires_at"
    " FROM loyalty.lots WHERE customer_id = ANY(:ids) ORDER BY customer_id, id",
    "stamp_cards": "SELECT customer_id, stamps, completed_at IS NOT NULL FROM"
    " loyalty.stamp_cards WHERE customer_id = ANY(:ids) ORDER BY customer_id, stamps",
    "stamp_entries": "SELECT p.customer_id, e.purchase_id, e.stamps FROM loyalty.stamp_entries e"
    " JOIN loyalty.purchases p ON p.id = e.purchase_id WHERE p.customer_id = ANY(:ids)"
    " ORDER BY e.purchase_id, e.stamps",
    "tier_changes": "SELECT customer_id, previous_tier, tier FROM loyalty.tier_changes"
    " WHERE customer_id = ANY(:ids) ORDER BY customer_id, id",
    "outbox": "SELECT key, event_type, payload FROM loyalty.outbox"
    " WHERE key = ANY(CAST(:keys AS text[])) ORDER BY key, id",
}
KEPT_PAYLOAD = ("points", "balance", "purchase_id", "tier", "previous_tier", "reason")


async def snapshot(session: AsyncSession, customers: list[uuid.UUID]) -> dict[str, list[Any]]:
    params = {"ids": customers, "keys": [str(c) for c in customers]}
    taken: dict[str, list[Any]] = {}
    for name, statement in SNAPSHOT.items():
        rows = [tuple(row) for row in await session.execute(text(statement), params)]
        if name == "outbox":
            rows = [
                (key, kind, {k: v for k, v in json.loads(payload).items() if k in KEPT_PAYLOAD})
                for key, kind, payload in rows
            ]
        taken[name] = rows
    return taken


async def replay(
    sessions: async_sessionmaker[AsyncSession],
    customers: list[uuid.UUID],
    runs: list[list[PurchaseCompleted]],
    apply: Any,
) -> dict[str, list[Any]]:
    async with sessions() as session, session.begin():
        await prepare(session, customers)
    for run in runs:
        async with sessions() as session, session.begin():
            await apply(session, run)
    async with sessions() as session:
        return await snapshot(session, customers)


async def compare(urls: tuple[str, str], plan: list[list[Item]]) -> None:
    customers = [uuid.uuid4() for _ in range(4)]
    runs = events_of(plan, customers)
    engines = [create_engine(url, pool_size=2) for url in urls]
    try:
        expected = await replay(session_factory(engines[0]), customers, runs, one_by_one)
        got = await replay(session_factory(engines[1]), customers, runs, batched)
    finally:
        for engine in engines:
            await engine.dispose()
    for table, rows in expected.items():
        assert got[table] == rows, table
    assert expected["purchases"], "the plan recorded purchases"


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=plans)
def test_batches_leave_what_one_by_one_leaves(
    twin_urls: tuple[str, str], plan: list[list[Item]]
) -> None:
    asyncio.run(compare(twin_urls, plan))


def test_a_run_that_lifts_a_tier_and_reaches_the_cap(twin_urls: tuple[str, str]) -> None:
    """Customer 0 (and 3, merged into it) spends 550 ringgit in one run: gold, and capped;
    customer 1 repays its debt over two purchases of one run."""
    plan: list[list[Item]] = [
        [(0, 30_000, 0, "grocery", 0), (3, 25_000, 0, "beauty", 0), (1, 20, 0, "coffee", 0)],
        [(1, 3_000, 0, "grocery", 0), (1, 4_000, 0, "grocery", 0)],
        [(0, 10_000, 0, "coffee", 0), (0, 5, 0, "coffee", 1), (2, 9_000, 1, "coffee", 2)],
    ]
    asyncio.run(compare(twin_urls, plan))
