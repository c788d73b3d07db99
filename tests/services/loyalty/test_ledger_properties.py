"""Ledger properties over random histories, against the real database.

Over random sequences of purchases, refunds, redemptions, expiries and redeliveries: the
balance always equals the ledger sum (and the open lots less debt), no event is applied
twice, and no redemption leaves the available balance below zero.

Hypothesis drives a sync test; each example runs in its own event loop with its own
engine, on one migrated database per test, and uses its own customer id.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.loyalty import ledger, purchases
from shared.db.engine import create_engine, session_factory
from shared.db.migrations import migrate
from shared.events.purchases import PurchaseCompleted, PurchaseRefunded

MIGRATIONS = Path("services/loyalty/migrations")
POLICY = purchases.Policy(return_window=timedelta(days=14), expiry_months=12)

Step = tuple[str, int, int]
steps = st.lists(
    st.one_of(
        st.tuples(st.just("purchase"), st.integers(0, 50_000), st.sampled_from([0, 30, 30])),
        st.tuples(st.just("refund"), st.integers(0, 9), st.integers(1, 30_000)),
        st.tuples(st.just("redeem"), st.integers(1, 150), st.just(0)),
        st.tuples(st.just("expire"), st.integers(0, 9), st.just(0)),
        st.tuples(st.just("redeliver_purchase"), st.integers(0, 9), st.just(0)),
        st.tuples(st.just("redeliver_refund"), st.integers(0, 9), st.just(0)),
    ),
    min_size=1,
    max_size=25,
)


@pytest.fixture
async def migrated_url(database_url: str) -> str:
    engine = create_engine(database_url)
    try:
        await migrate(engine, "loyalty", MIGRATIONS)
    finally:
        await engine.dispose()
    return database_url


@dataclass
class History:
    """What the example has sent so far, to redeliver and to count against."""

    customer: uuid.UUID = field(default_factory=uuid.uuid4)
    purchases: list[PurchaseCompleted] = field(default_factory=list)
    refunds: list[PurchaseRefunded] = field(default_factory=list)
    accepted_refunds: set[uuid.UUID] = field(default_factory=set)


@dataclass(frozen=True)
class Snapshot:
    balance: int
    debt: int
    available: int
    ledger_sum: int
    remaining: int
    purchases: int
    refunds: int


async def snapshot(session: AsyncSession, customer: uuid.UUID) -> Snapshot:
    row = (
        await session.execute(
            text(
                "SELECT m.balance, m.debt,"
                " (SELECT coalesce(sum(points), 0) FROM loyalty.ledger l"
                "  WHERE l.customer_id = m.customer_id) AS ledger_sum,"
                " (SELECT coalesce(sum(remaining), 0) FROM loyalty.lots o"
                "  WHERE o.customer_id = m.customer_id) AS remaining,"
                " (SELECT count(*) FROM loyalty.purchases p"
                "  WHERE p.customer_id = m.customer_id) AS purchases,"
                " (SELECT count(*) FROM loyalty.refunds r JOIN loyalty.purchases p"
                "  ON p.id = r.purchase_id WHERE p.customer_id = m.customer_id) AS refunds"
                " FROM loyalty.members m WHERE m.customer_id = :id"
            ),
            {"id": customer},
        )
    ).one_or_none()
    if row is None:
        return Snapshot(0, 0, 0, 0, 0, 0, 0)
    held = await ledger.balances(session, customer, datetime.now(UTC))
    return Snapshot(
        balance=int(row.balance),
        debt=int(row.debt),
        available=held.available,
        ledger_sum=int(row.ledger_sum),
        remaining=int(row.remaining),
        purchases=int(row.purchases),
        refunds=int(row.refunds),
    )


async def apply(session: AsyncSession, history: History, step: Step) -> bool:
    """Apply one step; False when the domain refused it (nothing may have changed)."""
    kind, a, b = step
    now = datetime.now(UTC)
    if kind == "purchase":
        event = PurchaseCompleted(
            purchase_id=uuid.uuid4(),
            customer_id=history.customer,
            order_id=uuid.uuid4().hex,
            currency="MYR",
            total_minor=a,
            purchased_at=now - timedelta(days=b),
        )
        history.purchases.append(event)
        await purchases.record_purchase(session, event, POLICY, origin="test", now=now)
    elif kind == "redeliver_purchase" and history.purchases:
        repeated = history.purchases[a % len(history.purchases)]
        await purchases.record_purchase(session, repeated, POLICY, origin="test", now=now)
    elif kind == "refund" and history.purchases:
        bought = history.purchases[a % len(history.purchases)]
        refund = PurchaseRefunded(
            refund_id=uuid.uuid4(),
            purchase_id=bought.purchase_id,
            customer_id=history.customer,
            currency="MYR",
            amount_minor=b,
            refunded_at=now,
        )
        history.refunds.append(refund)
        try:
            await purchases.record_refund(session, refund, now=now)
        except purchases.RefundRefused:
            return False
        history.accepted_refunds.add(refund.refund_id)
    elif kind == "redeliver_refund" and history.refunds:
        repeated_refund = history.refunds[a % len(history.refunds)]
        try:
            await purchases.record_refund(session, repeated_refund, now=now)
        except purchases.RefundRefused:
            return False
        history.accepted_refunds.add(repeated_refund.refund_id)
    elif kind == "redeem":
        await ledger.lock_member(session, history.customer, now)
        try:
            await ledger.debit(
                session,
                history.customer,
                kind="redeem",
                points=a,
                reference=f"redeem:{uuid.uuid4()}",
                now=now,
                available_only=True,
                allow_debt=False,
            )
        except ledger.InsufficientPoints:
            return False
    elif kind == "expire":
        await ledger.lock_member(session, history.customer, now)
        open_lots = (
            await session.execute(
                text(
                    "SELECT id, remaining FROM loyalty.lots"
                    " WHERE customer_id = :id AND remaining > 0 ORDER BY id"
                ),
                {"id": history.customer},
            )
        ).all()
        if open_lots:
            lot_id, remaining = open_lots[a % len(open_lots)]
            await ledger.debit(
                session,
                history.customer,
                kind="expire",
                points=int(remaining),
                reference=f"expire:{lot_id}",
                now=now,
                available_only=False,
                allow_debt=False,
                first_lots=[int(lot_id)],
            )
    return True


async def run_example(url: str, plan: list[Step]) -> None:
    engine = create_engine(url, pool_size=2)
    sessions = session_factory(engine)
    history = History()
    try:
        for step in plan:
            async with sessions() as session:
                before = await snapshot(session, history.customer)
            async with sessions() as session:
                await session.begin()
                applied = await apply(session, history, step)
                if applied:
                    await session.commit()
                else:
                    await session.rollback()
            async with sessions() as session:
                after = await snapshot(session, history.customer)
            event(f"{step[0]} {'applied' if applied else 'refused'}")
            if after.debt:
                event("member in debt")
            assert after.balance == after.ledger_sum, (step, after)
            assert after.balance == after.remaining - after.debt, (step, after)
            assert after.debt >= 0
            assert after.purchases == len(history.purchases), "each purchase stored once"
            assert after.refunds == len(history.accepted_refunds), "each refund stored once"
            if step[0].startswith("redeliver") or not applied:
                assert after == before, (step, "a redelivery or refusal changed the ledger")
            if step[0] == "redeem" and applied:
                assert after.available >= 0, (step, after)
                assert after.balance == before.balance - step[1]
        async with sessions() as session:
            duplicates = (
                await session.execute(
                    text(
                        "SELECT count(*) FROM (SELECT kind, reference FROM loyalty.ledger"
                        " WHERE customer_id = :id AND reference IS NOT NULL"
                        " GROUP BY kind, reference HAVING count(*) > 1) d"
                    ),
                    {"id": history.customer},
                )
            ).scalar_one()
        assert duplicates == 0, "an event was applied twice"
    finally:
        await engine.dispose()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=steps)
@example(  # spend, then a full refund: debt; a redelivery; a purchase repays it
    plan=[
        ("purchase", 20_000, 30),
        ("redeem", 150, 0),
        ("refund", 0, 20_000),
        ("redeliver_refund", 0, 0),
        ("redeem", 1, 0),
        ("purchase", 30_000, 30),
        ("redeliver_purchase", 1, 0),
        ("redeem", 100, 0),
        ("expire", 0, 0),
        ("redeem", 1, 0),
    ]
)
def test_ledger_stays_balanced_over_random_histories(migrated_url: str, plan: list[Step]) -> None:
    # Each example gets its own loop and engine, and its own customer (see History).
    asyncio.run(run_example(migrated_url, plan))
