"""Refits: BG/NBD, Gamma-Gamma and the RFM quintile edges, then everyone rescored.

A scheduled job checks every few minutes whether the newest fit is older than
`scoring_refit_interval_seconds` (daily by default) and refits when it is, or when there
is no fit yet but enough data; `POST /v1/scoring/fits` refits on demand. BG/NBD starts
from the last parameters (same answer, fewer iterations).

Every fit is stored with its parameters, standard errors, summed log-likelihood, time
unit, data size and diagnostics: the optimiser's convergence flag and iterations, the
Gamma-Gamma frequency/spend correlation, and a calibration/holdout check in the manner of
Fader, Hardie & Lee 2005 §7, where the history is long enough: the first half of the
observed period is the calibration period, a model is fitted on it, and its predictions
for the second half are set beside what happened, by number of calibration purchases and
by P(alive) decile.

Memory stays bounded by one row of a few numbers per customer: customers are read in
streamed partitions into arrays and rescored in chunks of `CHUNK` customers, each in its
own transaction.

Population: customers with a counting purchase, erased ones included (their purchase
facts are pseudonymous and still describe the shop's customers); merged duplicates have
no purchases left.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import structlog
from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scoring import scores
from services.scoring.clv.bgnbd import (
    BgNbdParams,
    expected_purchases,
    fit_bgnbd,
    probability_alive,
)
from services.scoring.clv.gamma_gamma import fit_gamma_gamma, independence_check
from services.scoring.clv.mle import Fit
from services.scoring.clv.rfm import quintile_edges
from services.scoring.models import customers, fits, purchases
from services.scoring.scores import DAYS_PER_UNIT, RFM_AXES, FloatArray
from services.scoring.state import ACTIVE, MERGED, local_day
from shared.jobs import ScheduledJob
from shared.settings import Settings

log = structlog.get_logger(__name__)

CHUNK = 5_000
"""Customers per rescoring transaction and per streamed partition."""
MIN_CUSTOMERS = 30
"""Fewer customers than this cannot pin four parameters down; scores wait for more."""
MIN_HOLDOUT_DAYS = 28
JOB_INTERVAL_SECONDS = 600
LOCK_NAME = "crm.job.scoring.refit-models"
"""The job runner's advisory lock; an on-demand refit takes the same one."""


class NotEnoughData(Exception):
    """There are too few customers (or no repeat buyers) to fit the models."""


@dataclass(frozen=True)
class Outcome:
    """What a refit stored and how many customers it rescored."""

    fit_ids: dict[str, int]
    rescored: int


@dataclass(frozen=True)
class Population:
    """One row per customer with a purchase, as arrays."""

    purchase_days: FloatArray
    first_day: FloatArray  # days since the epoch
    last_day: FloatArray
    repeat_spend: FloatArray  # major units
    orders: FloatArray
    spend: FloatArray  # major units

    def __len__(self) -> int:
        return len(self.purchase_days)


EPOCH = date(1970, 1, 1)


async def load_population(session: AsyncSession) -> Population:
    """Stream the customers with a purchase into arrays (no row objects kept)."""
    query = (
        select(
            customers.c.purchase_days,
            customers.c.first_day,
            customers.c.last_day,
            customers.c.repeat_spend_minor,
            customers.c.orders,
            customers.c.spend_minor,
            customers.c.currency,
        )
        .where(customers.c.status != MERGED, customers.c.purchase_days > 0)
        .execution_options(yield_per=CHUNK)
    )
    parts: list[list[FloatArray]] = [[] for _ in range(6)]
    result = await session.stream(query)
    async for partition in result.partitions(CHUNK):
        scale = np.array([scores.minor_per_major(row.currency) for row in partition])
        columns = (
            [row.purchase_days for row in partition],
            [(row.first_day - EPOCH).days for row in partition],
            [(row.last_day - EPOCH).days for row in partition],
            np.array([row.repeat_spend_minor for row in partition], dtype=float) / scale,
            [row.orders for row in partition],
            np.array([row.spend_minor for row in partition], dtype=float) / scale,
        )
        for target, column in zip(parts, columns, strict=True):
            target.append(np.asarray(column, dtype=np.float64))
    joined = [np.concatenate(p) if p else np.zeros(0) for p in parts]
    return Population(*joined)


def _inputs(population: Population, today: date, unit: str) -> scores.Inputs:
    days = DAYS_PER_UNIT[unit]
    today_n = float((today - EPOCH).days)
    frequency = population.purchase_days - 1
    recency = population.last_day - population.first_day
    age = np.maximum(today_n - population.first_day, recency)
    monetary = np.divide(
        population.repeat_spend, frequency, out=np.zeros_like(frequency), where=frequency > 0
    )
    return scores.Inputs(frequency, recency / days, age / days, monetary)


def _fit_row(
    model: str, fit: Fit[Any], unit: str, diagnostics: dict[str, Any], trigger: str, now: datetime
) -> dict[str, Any]:
    return {
        "model": model,
        "params": asdict(fit.params),
        "standard_errors": {k: _json_float(v) for k, v in fit.standard_errors.items()},
        "log_likelihood": fit.log_likelihood,
        "time_unit": unit,
        "customers": fit.customers,
        "diagnostics": _json_clean(
            {"converged": fit.converged, "iterations": fit.iterations} | diagnostics
        ),
        "trigger": trigger,
        "as_of": now,
        "created_at": now,
    }


def _json_float(value: float) -> float | None:
    """JSON has no NaN or infinity; an undefined number is null."""
    return value if math.isfinite(value) else None


def _json_clean(value: Any) -> Any:
    """`value` with every non-finite float (NaN, infinity) replaced by null."""
    if isinstance(value, float):
        return _json_float(value)
    if isinstance(value, dict):
        return {k: _json_clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_clean(v) for v in value]
    return value


async def _holdout_check(
    session: AsyncSession, start: date, today: date, unit: str, warm: BgNbdParams
) -> dict[str, Any]:
    """Calibrate on the first half of the history and predict the second (FHL 2005 §7)."""
    span = (today - start).days
    holdout_days = span // 2
    if holdout_days < MIN_HOLDOUT_DAYS:
        return {"skipped": f"history of {span} days is too short for a holdout check"}
    calibration_end = today - timedelta(days=holdout_days)
    counting = ~(
        (purchases.c.refunded_minor > 0) & (purchases.c.refunded_minor >= purchases.c.total_minor)
    )
    in_calibration = purchases.c.day <= calibration_end
    query = (
        select(
            func.min(purchases.c.day).label("first_day"),
            func.max(purchases.c.day).filter(in_calibration).label("last_day"),
            func.count(purchases.c.day.distinct()).filter(in_calibration).label("cal_days"),
            func.count(purchases.c.day.distinct()).filter(~in_calibration).label("holdout_days"),
        )
        .where(counting)
        .group_by(purchases.c.customer_id)
        .having(func.min(purchases.c.day) <= calibration_end)
        .execution_options(yield_per=CHUNK)
    )
    parts: list[list[FloatArray]] = [[], [], [], []]
    result = await session.stream(query)
    async for partition in result.partitions(CHUNK):
        parts[0].append(np.array([(r.first_day - EPOCH).days for r in partition], dtype=float))
        parts[1].append(np.array([(r.last_day - EPOCH).days for r in partition], dtype=float))
        parts[2].append(np.array([r.cal_days for r in partition], dtype=float))
        parts[3].append(np.array([r.holdout_days for r in partition], dtype=float))
    first, last, cal_days, actual = (np.concatenate(p) if p else np.zeros(0) for p in parts)
    if len(first) < MIN_CUSTOMERS or not np.any(cal_days > 1):
        return {"skipped": "too few customers or repeat buyers in the calibration period"}
    days = DAYS_PER_UNIT[unit]
    end_n = float((calibration_end - EPOCH).days)
    frequency, recency, age = cal_days - 1, (last - first) / days, (end_n - first) / days
    try:
        calibration = fit_bgnbd(frequency, recency, age, warm_start=warm)
    except ValueError as exc:
        return {"skipped": str(exc)}
    horizon = holdout_days / days
    predicted = expected_purchases(calibration.params, horizon, frequency, recency, age)
    alive = probability_alive(calibration.params, frequency, recency, age)
    if not (np.all(np.isfinite(predicted)) and np.all(np.isfinite(alive))):
        log.warning("scoring.refit.holdout_not_finite", params=asdict(calibration.params))
    by_purchases = []
    for x in range(8):
        group = frequency >= x if x == 7 else frequency == x
        if np.any(group):
            by_purchases.append(
                {
                    "calibration_purchases": f"{x}+" if x == 7 else str(x),
                    "customers": int(group.sum()),
                    "predicted": float(predicted[group].mean()),
                    "actual": float(actual[group].mean()),
                }
            )
    order = np.argsort(alive, kind="stable")
    deciles = [
        {
            "decile": n + 1,
            "customers": len(part),
            "mean_p_alive": float(alive[part].mean()),
            "bought_in_holdout": float((actual[part] > 0).mean()),
        }
        for n, part in enumerate(np.array_split(order, 10))
        if len(part)
    ]
    return {
        "calibration_end": calibration_end.isoformat(),
        "holdout_length": horizon,
        "customers": len(first),
        "calibration_params": asdict(calibration.params),
        "predicted_total": float(predicted.sum()),
        "actual_total": float(actual.sum()),
        "by_calibration_purchases": by_purchases,
        "p_alive_deciles": deciles,
    }


async def _last_bgnbd(session: AsyncSession, unit: str) -> BgNbdParams | None:
    row = (
        await session.execute(
            select(fits.c.params)
            .where(fits.c.model == "bgnbd", fits.c.time_unit == unit)
            .order_by(fits.c.id.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    return None if row is None else BgNbdParams(**row)


async def fit_models(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, *, now: datetime, trigger: str
) -> dict[str, int]:
    """Fit and store the three models in one transaction; the new fit ids by model.

    Raises NotEnoughData when BG/NBD cannot be fitted yet.
    """
    unit = settings.scoring_time_unit
    today = local_day(now, settings.scoring_time_zone)
    async with sessions() as session, session.begin():
        population = await load_population(session)
        if len(population) < MIN_CUSTOMERS:
            raise NotEnoughData(
                f"{len(population)} customers have purchases; a fit needs {MIN_CUSTOMERS}"
            )
        warm = await _last_bgnbd(session, unit)
        inputs = _inputs(population, today, unit)
        try:
            bg = fit_bgnbd(inputs.frequency, inputs.recency, inputs.T, warm_start=warm)
        except ValueError as exc:
            raise NotEnoughData(str(exc)) from exc
        start = EPOCH + timedelta(days=int(population.first_day.min()))
        rows = [
            _fit_row(
                "bgnbd",
                bg,
                unit,
                {
                    "warm_started": warm is not None,
                    "holdout": await _holdout_check(session, start, today, unit, bg.params),
                },
                trigger,
                now,
            )
        ]
        repeat = inputs.frequency > 0
        correlation = independence_check(inputs.frequency[repeat], inputs.monetary[repeat])
        try:
            gg = fit_gamma_gamma(inputs.frequency[repeat], inputs.monetary[repeat])
        except ValueError as exc:
            log.info("scoring.refit.gamma_gamma_skipped", reason=str(exc))
        else:
            rows.append(
                _fit_row(
                    "gamma_gamma",
                    gg,
                    unit,
                    {"frequency_spend_correlation": _json_float(correlation)},
                    trigger,
                    now,
                )
            )
        values = {
            "recency": (population.last_day - float((today - EPOCH).days)),
            "frequency": population.orders,
            "monetary": population.spend,
        }
        rows.append(
            {
                "model": "rfm",
                "params": {axis: quintile_edges(values[axis]) for axis in RFM_AXES},
                "standard_errors": {},
                "log_likelihood": 0.0,  # not a likelihood model
                "time_unit": "days",
                "customers": len(population),
                "diagnostics": {"recency": "minus days since the last purchase"},
                "trigger": trigger,
                "as_of": now,
                "created_at": now,
            }
        )
        stored = await session.execute(insert(fits).returning(fits.c.id, fits.c.model), rows)
        fit_ids = {row.model: int(row.id) for row in stored}
    log.info("scoring.refit.stored", fits=fit_ids, customers=len(population), trigger=trigger)
    return fit_ids


async def rescore_all(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, *, now: datetime
) -> int:
    """Rescore every active customer with a purchase, a chunk per transaction."""
    after = None
    done = 0
    async with sessions() as session:
        current = await scores.current_fits(session)
    while True:
        async with sessions() as session, session.begin():
            query = (
                select(customers.c.customer_id)
                .where(customers.c.status == ACTIVE, customers.c.purchase_days > 0)
                .order_by(customers.c.customer_id)
                .limit(CHUNK)
            )
            if after is not None:
                query = query.where(customers.c.customer_id > after)
            ids: Sequence[Any] = (await session.execute(query)).scalars().all()
            if not ids:
                return done
            await scores.rescore(session, ids, now=now, settings=settings, current=current)
        after = ids[-1]
        done += len(ids)


async def refit(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, *, trigger: str
) -> Outcome:
    """Fit, store, rescore everyone; NotEnoughData when no fit is possible yet."""
    now = datetime.now(UTC)
    fit_ids = await fit_models(sessions, settings, now=now, trigger=trigger)
    return Outcome(fit_ids, await rescore_all(sessions, settings, now=now))


async def refit_on_demand(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> Outcome | None:
    """A refit now, unless one is running (None).

    The lock is transaction-scoped on a session of its own, held (idle) while the refit
    runs in its own transactions, and conflicts with the scheduled job's lock.
    """
    lock = text("SELECT pg_try_advisory_xact_lock(hashtextextended(:name, 0))")
    async with sessions() as holder, holder.begin():
        if not (await holder.execute(lock, {"name": LOCK_NAME})).scalar_one():
            return None
        return await refit(sessions, settings, trigger="on-demand")


async def scheduled_refit(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> int:
    """The job: refit when the newest fit is older than the interval; customers rescored."""
    async with sessions() as session:
        latest = (
            await session.execute(
                select(func.max(fits.c.created_at)).where(fits.c.model == "bgnbd")
            )
        ).scalar_one_or_none()
    due = timedelta(seconds=settings.scoring_refit_interval_seconds)
    if latest is not None and datetime.now(UTC) - latest < due:
        return 0
    try:
        return (await refit(sessions, settings, trigger="scheduled")).rescored
    except NotEnoughData as exc:
        log.info("scoring.refit.waiting", reason=str(exc))
        return 0


JOB = ScheduledJob("refit-models", JOB_INTERVAL_SECONDS, scheduled_refit)
