"""Refits through the scheduled job and on demand, on a shop simulated from BG/NBD.

`seed_shop` writes purchase rows drawn from the BG/NBD and Gamma-Gamma processes and the
customers' state as `state.summarize` defines it (the handlers' agreement with that is
test_state's business), so a few hundred customers take one statement each.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scoring import refit, state
from services.scoring.clv.bgnbd import BgNbdParams, fit_bgnbd
from services.scoring.clv.gamma_gamma import GammaGammaParams
from services.scoring.clv.simulate import simulate_bgnbd, simulate_spend
from services.scoring.models import customers, fits, purchases
from shared.db.engine import create_engine, session_factory
from shared.db.migrations import migrate
from shared.settings import Settings

MIGRATIONS = Path("services/scoring/migrations")
TRUE_BG = BgNbdParams(r=0.8, alpha=4.0, a=0.6, b=2.5)  # weeks
TRUE_GG = GammaGammaParams(p=6.0, q=4.0, v=15.0)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(database_url)
    await migrate(engine, "scoring", MIGRATIONS)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


async def seed_shop(
    sessions: async_sessionmaker[AsyncSession], size: int, *, seed: int = 7, weeks: int = 78
) -> list[uuid.UUID]:
    """`size` customers who joined over the last `weeks`, buying as BG/NBD says."""
    settings = Settings()
    zone = ZoneInfo(settings.scoring_time_zone)
    rng = np.random.default_rng(seed)
    today = state.local_day(datetime.now(UTC), settings.scoring_time_zone)
    ages = rng.integers(14, weeks * 7, size).astype(float)  # days since the first purchase
    frequency, recency = simulate_bgnbd(TRUE_BG, ages / 7, rng, day=1 / 7)
    spend = simulate_spend(TRUE_GG, frequency, rng)
    ids = [uuid.uuid4() for _ in range(size)]
    purchase_rows: list[dict[str, Any]] = []
    customer_rows: list[dict[str, Any]] = []
    for n, customer_id in enumerate(ids):
        first = today - timedelta(days=int(ages[n]))
        last_offset = round(recency[n] * 7)
        repeats = int(frequency[n])
        middle = rng.choice(
            np.arange(1, max(last_offset, 1)), size=max(repeats - 1, 0), replace=False
        )
        offsets = [0, *sorted(int(d) for d in middle), *([last_offset] if repeats else [])]
        facts = []
        for k, offset in enumerate(offsets):
            day = first + timedelta(days=offset)
            amount = 2_000 if k == 0 else max(int(spend[n] * 100 * rng.uniform(0.8, 1.2)), 100)
            at = datetime.combine(day, time(12), zone).astimezone(UTC)
            facts.append(state.PurchaseFacts(day, at, amount, 0, "kl-01", "pos"))
            purchase_rows.append(
                {
                    "id": uuid.uuid4(),
                    "customer_id": customer_id,
                    "day": day,
                    "currency": "MYR",
                    "total_minor": amount,
                    "refunded_minor": 0,
                    "store_id": "kl-01",
                    "channel": "pos",
                    "purchased_at": at,
                }
            )
        customer_rows.append(
            {
                "customer_id": customer_id,
                "status": "active",
                "currency": "MYR",
                "updated_at": datetime.now(UTC),
                **state.summarize(facts).values(),
            }
        )
    async with sessions() as session, session.begin():
        await session.execute(insert(customers), customer_rows)
        await session.execute(insert(purchases), purchase_rows)
    return ids


async def fit_rows(sessions: async_sessionmaker[AsyncSession]) -> list[Any]:
    async with sessions() as session:
        return list((await session.execute(select(fits).order_by(fits.c.id))).all())


async def test_scheduled_refit_stores_fits_with_diagnostics_and_rescores(
    db: async_sessionmaker[AsyncSession],
) -> None:
    ids = await seed_shop(db, 800)
    settings = Settings()

    rescored = await refit.scheduled_refit(db, settings)

    assert rescored == 800
    stored = {row.model: row for row in await fit_rows(db)}
    assert set(stored) == {"bgnbd", "gamma_gamma", "rfm"}
    bg = stored["bgnbd"]
    assert bg.time_unit == "weeks" and bg.customers == 800 and bg.trigger == "scheduled"
    assert set(bg.params) == {"r", "alpha", "a", "b"}
    assert all(value is not None and value > 0 for value in bg.standard_errors.values())
    assert bg.log_likelihood < 0
    assert bg.diagnostics["converged"] is True
    assert bg.diagnostics["warm_started"] is False
    # The same numbers a direct fit on the customers' summaries gives.
    async with db() as session:
        population = await refit.load_population(session)
    today = state.local_day(datetime.now(UTC), settings.scoring_time_zone)
    inputs = refit._inputs(population, today, "weeks")
    direct = fit_bgnbd(inputs.frequency, inputs.recency, inputs.T)
    assert bg.log_likelihood == pytest.approx(direct.log_likelihood, rel=1e-6)
    assert bg.params["r"] == pytest.approx(direct.params.r, rel=1e-3)
    # Simulated from known parameters: recovered within what 800 customers allow.
    assert bg.params["r"] == pytest.approx(TRUE_BG.r, rel=0.5)
    assert bg.params["alpha"] == pytest.approx(TRUE_BG.alpha, rel=0.5)
    holdout = bg.diagnostics["holdout"]
    assert holdout["customers"] > 0
    assert holdout["by_calibration_purchases"][0]["calibration_purchases"] == "0"
    assert len(holdout["p_alive_deciles"]) == 10
    assert holdout["predicted_total"] == pytest.approx(holdout["actual_total"], rel=0.35)
    gg = stored["gamma_gamma"]
    assert -1 <= gg.diagnostics["frequency_spend_correlation"] <= 1
    assert gg.customers == int((inputs.frequency > 0).sum())
    rfm = stored["rfm"]
    assert set(rfm.params) == {"recency", "frequency", "monetary"}
    assert all(len(edges) == 4 for edges in rfm.params.values())
    async with db() as session:
        scored = (
            await session.execute(
                select(func.count()).where(
                    customers.c.customer_id.in_(ids),
                    customers.c.fit_id == bg.id,
                    customers.c.churn_band.is_not(None),
                    customers.c.rfm_segment.is_not(None),
                    customers.c.clv >= 0,
                )
            )
        ).scalar_one()
    assert scored == 800

    # Not due again until the interval has passed.
    assert await refit.scheduled_refit(db, settings) == 0
    assert len(await fit_rows(db)) == 3


async def test_on_demand_refit_starts_from_the_last_parameters(
    db: async_sessionmaker[AsyncSession],
) -> None:
    await seed_shop(db, 300, seed=11)
    settings = Settings()
    first = await refit.refit_on_demand(db, settings)
    second = await refit.refit_on_demand(db, settings)
    assert first is not None and second is not None
    rows = {row.id: row for row in await fit_rows(db)}
    before, after = rows[first.fit_ids["bgnbd"]], rows[second.fit_ids["bgnbd"]]
    assert after.trigger == "on-demand"
    assert after.diagnostics["warm_started"] is True
    for name in ("r", "alpha", "a", "b"):
        assert after.params[name] == pytest.approx(before.params[name], rel=1e-3)


async def test_no_fit_without_enough_customers(db: async_sessionmaker[AsyncSession]) -> None:
    await seed_shop(db, refit.MIN_CUSTOMERS - 1)
    assert await refit.scheduled_refit(db, Settings()) == 0
    with pytest.raises(refit.NotEnoughData):
        await refit.refit_on_demand(db, Settings())
    assert await fit_rows(db) == []
