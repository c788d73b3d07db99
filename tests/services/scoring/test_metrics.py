"""Business metrics on a small hand-built shop whose every answer is worked out below.

Purchases (MYR unless noted; `r` is the refunded amount):

    A  2026-01-05 1000, 2026-01-20 500, 2026-02-10 2000
    B  2026-01-07 3000
    C  2026-02-03 100 r100 (fully refunded: not a purchase), 2026-03-01 400
    D  2025-12-15 700, 2026-01-15 700, 2026-03-15 700
    E  2026-03-10 50000 THB, 2026-03-10 100 THB
    F  2026-02-14 1000 r300, 2026-02-14 200

Buyers by month: Dec {D}; Jan {A, B, D}; Feb {A, F}; Mar {C, D, E}.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, date, datetime
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scoring import metrics
from services.scoring.models import customers, purchases

Sessions = async_sessionmaker[AsyncSession]
JAN, FEB, MAR = date(2026, 1, 1), date(2026, 2, 1), date(2026, 3, 1)
START, END = date(2026, 1, 1), date(2026, 3, 31)

PURCHASES = {
    "A": [("2026-01-05", 1000, 0), ("2026-01-20", 500, 0), ("2026-02-10", 2000, 0)],
    "B": [("2026-01-07", 3000, 0)],
    "C": [("2026-02-03", 100, 100), ("2026-03-01", 400, 0)],
    "D": [("2025-12-15", 700, 0), ("2026-01-15", 700, 0), ("2026-03-15", 700, 0)],
    "E": [("2026-03-10", 50000, 0), ("2026-03-10", 100, 0)],
    "F": [("2026-02-14", 1000, 300), ("2026-02-14", 200, 0)],
}
CLV: dict[str, tuple[float | None, str]] = {
    "A": (100.0, "MYR"),
    "B": (50.0, "MYR"),
    "C": (None, "MYR"),
    "D": (250.0, "MYR"),
    "E": (1000.0, "THB"),
    "F": (None, "MYR"),
    "Merged": (999.0, "MYR"),  # merged away: not counted
}


async def seed_shop(sessions: Sessions) -> dict[str, uuid.UUID]:
    """The shop of the module docstring, written with SQL; the customers' ids by letter."""
    ids = {name: uuid.uuid4() for name in CLV}
    now = datetime(2026, 4, 1, tzinfo=UTC)
    people = [
        {
            "customer_id": ids[name],
            "status": "merged" if name == "Merged" else "active",
            "clv": clv,
            "currency": currency,
            "updated_at": now,
        }
        for name, (clv, currency) in CLV.items()
    ]
    rows: list[dict[str, Any]] = []
    for name, bought in PURCHASES.items():
        for day, total, refunded in bought:
            when = date.fromisoformat(day)
            rows.append(
                {
                    "id": uuid.uuid4(),
                    "customer_id": ids[name],
                    "day": when,
                    "currency": "THB" if name == "E" else "MYR",
                    "total_minor": total,
                    "refunded_minor": refunded,
                    "store_id": "kl-01",
                    "channel": "pos",
                    "purchased_at": datetime(when.year, when.month, when.day, 10, tzinfo=UTC),
                }
            )
    async with sessions() as session, session.begin():
        await session.execute(customers.insert(), people)
        await session.execute(purchases.insert(), rows)
    return ids


async def test_repeat_purchase_rate(sessions: Sessions) -> None:
    await seed_shop(sessions)
    async with sessions() as session:
        # Repeaters: A (three days) and D (two in the window); F's two are one day.
        found = await metrics.repeat_purchase(session, START, END)
        assert found == metrics.RepeatPurchase(customers=6, repeat_customers=2, rate=1 / 3)
        january = await metrics.repeat_purchase(session, JAN, date(2026, 1, 31))
        assert january == metrics.RepeatPurchase(3, 1, 1 / 3)
        empty = await metrics.repeat_purchase(session, date(2020, 1, 1), date(2020, 1, 31))
        assert empty == metrics.RepeatPurchase(0, 0, None)


async def test_churn_by_month(sessions: Sessions) -> None:
    await seed_shop(sessions)
    async with sessions() as session:
        found = await metrics.churn_by_month(session, START, END)
        assert found == [
            metrics.ChurnMonth(JAN, active_before=1, churned=0, rate=0.0, partial=False),
            metrics.ChurnMonth(FEB, active_before=3, churned=2, rate=2 / 3, partial=False),
            metrics.ChurnMonth(MAR, active_before=2, churned=2, rate=1.0, partial=False),
        ]
        partial = await metrics.churn_by_month(session, date(2026, 3, 1), date(2026, 3, 15))
        assert partial == [metrics.ChurnMonth(MAR, 2, 2, 1.0, partial=True)]
        quiet = await metrics.churn_by_month(session, date(2026, 5, 1), date(2026, 5, 31))
        assert quiet == [metrics.ChurnMonth(date(2026, 5, 1), 0, 0, None, partial=False)]


async def test_retention_cohorts(sessions: Sessions) -> None:
    await seed_shop(sessions)
    async with sessions() as session:
        found = await metrics.cohorts(session, START, END)
    # D's cohort (December) starts before the window; C's first real purchase is in March.
    assert found == [
        metrics.Cohort(JAN, customers=2, retention=[1.0, 0.5, 0.0]),
        metrics.Cohort(FEB, customers=1, retention=[1.0, 0.0]),
        metrics.Cohort(MAR, customers=2, retention=[1.0]),
    ]


async def test_clv_totals_and_top_decile_share(sessions: Sessions) -> None:
    await seed_shop(sessions)
    async with sessions() as session:
        clv = await metrics.clv_totals(session)
        revenue = await metrics.revenue(session, START, END)
    assert clv == [
        metrics.ClvTotals("MYR", customers=3, total=400.0, average=400 / 3),
        metrics.ClvTotals("THB", customers=1, total=1000.0, average=1000.0),
    ]
    # MYR net revenue in the window: A 3500, B 3000, C 400, D 1400, F 900 = 9200; the top
    # tenth of five buyers is one customer, A.
    assert revenue == [
        metrics.Revenue("MYR", 5, 9200, 1, 3500, 3500 / 9200),
        metrics.Revenue("THB", 1, 50100, 1, 50100, 1.0),
    ]


async def test_top_decile_of_many_customers(sessions: Sessions) -> None:
    """Twenty-five buyers spending 1..25: the top decile is the three biggest."""
    now = datetime(2026, 1, 10, tzinfo=UTC)
    rows = [
        {
            "id": uuid.uuid4(),
            "customer_id": uuid.uuid4(),
            "day": date(2026, 1, 10),
            "currency": "MYR",
            "total_minor": amount,
            "refunded_minor": 0,
            "store_id": None,
            "channel": "web",
            "purchased_at": now,
        }
        for amount in range(1, 26)
    ]
    async with sessions() as session, session.begin():
        await session.execute(purchases.insert(), rows)
    async with sessions() as session:
        [found] = await metrics.revenue(session, START, END)
    assert found == metrics.Revenue("MYR", 25, 325, 3, 25 + 24 + 23, 72 / 325)


def test_horizon_value_is_the_discounted_geometric_sum() -> None:
    q = 0.8 / 1.01
    assert metrics.horizon_value(0.8, 0.01, 12) == pytest.approx(sum(q**t for t in range(12)))
    assert metrics.horizon_value(1.0, 0.0, 12) == 12
    # A long horizon without discounting is the textbook lifespan 1 / (1 - r).
    assert metrics.horizon_value(0.75, 0.0, 10_000) == pytest.approx(4.0)


async def test_what_if(sessions: Sessions) -> None:
    await seed_shop(sessions)
    async with sessions() as session:
        # Observed: 6 customers active in a month before, 4 of them churned: r = 1/3.
        # Without discounting over a long horizon the value is the lifespan 1 / (1 - r),
        # so raising r by half, to 1/2, multiplies CLV by (2/3) / (1/2) = 4/3.
        found = await metrics.what_if(
            session,
            START,
            END,
            retention_uplift=0.5,
            retention=None,
            horizon_days=365 * 1000,
            annual_discount_rate=0.0,
        )
        assert found.baseline_retention == pytest.approx(1 / 3)
        assert found.improved_retention == pytest.approx(0.5)
        assert found.clv_multiplier == pytest.approx(4 / 3)
        [myr, thb] = found.currencies
        assert (myr.currency, myr.customers, myr.clv) == ("MYR", 3, 400.0)
        assert myr.gained == pytest.approx(400 / 3)
        assert thb.clv_after == pytest.approx(4000 / 3)

        # 1461 days are exactly 48 months: the explicit discounted sum over them.
        given = await metrics.what_if(
            session,
            START,
            END,
            retention_uplift=0.05,
            retention=0.8,
            horizon_days=1461,
            annual_discount_rate=0.1,
        )
        d = 1.1 ** (1 / 12) - 1

        def value(r: float) -> float:
            return sum(float((r / (1 + d)) ** t) for t in range(48))

        assert given.horizon_months == pytest.approx(48)
        assert given.monthly_discount_rate == pytest.approx(d)
        assert given.clv_multiplier == pytest.approx(value(0.84) / value(0.8))
        assert given.currencies[0].gained == pytest.approx(400 * (value(0.84) / value(0.8) - 1))

        capped = await metrics.what_if(
            session,
            START,
            END,
            retention_uplift=1.0,
            retention=0.9,
            horizon_days=365,
            annual_discount_rate=0.1,
        )
        assert capped.improved_retention == 1.0
        assert capped.clv_multiplier is not None and math.isfinite(capped.clv_multiplier)


async def test_what_if_without_history(sessions: Sessions) -> None:
    async with sessions() as session:
        found = await metrics.what_if(
            session,
            START,
            END,
            retention_uplift=0.05,
            retention=None,
            horizon_days=365,
            annual_discount_rate=0.1,
        )
    assert (found.baseline_retention, found.clv_multiplier, found.currencies) == (None, None, [])
