"""Customers' scores from their state and the latest fits, and `customer.scored`.

Scores are closed-form functions of a customer's state, of today (their age T keeps
growing) and of the stored fits, so they are recomputed on every purchase, by the refit
for everyone, and at read time. Customers without a counting purchase, and merged or
erased ones, have no scores (NULL): BG/NBD describes customers from their first purchase
on, and scoring stops profiling a customer who asked to be erased.

`customer.scored` is sent only on a material change against what was last sent
(`published`): a new churn band or RFM segment, or CLV moving by more than
`scoring_clv_change_threshold` of its published value.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.ext.asyncio import AsyncSession

from services.scoring import segments
from services.scoring.clv.bgnbd import BgNbdParams, expected_purchases, probability_alive
from services.scoring.clv.gamma_gamma import GammaGammaParams
from services.scoring.clv.rfm import quintile, rfm_segment
from services.scoring.clv.value import discounted_clv
from services.scoring.models import SCHEMA, customers, fits
from services.scoring.state import ACTIVE, local_day
from shared.events.scoring import CustomerScored
from shared.pipeline.outbox import add_event
from shared.settings import Settings

DAYS_PER_UNIT = {"days": 1.0, "weeks": 7.0}
ZERO_DECIMAL_CURRENCIES = frozenset({"JPY", "KRW", "VND", "IDR", "CLP", "ISK", "UGX"})
RFM_AXES = ("recency", "frequency", "monetary")
SOURCE = "scoring"
FloatArray = NDArray[np.float64]


def minor_per_major(currency: str | None) -> float:
    """Minor units in one major unit (100 for MYR and THB)."""
    return 1.0 if currency in ZERO_DECIMAL_CURRENCIES else 100.0


@dataclass(frozen=True)
class Inputs:
    """BG/NBD and Gamma-Gamma inputs in the `lifetimes` conventions, in one time unit."""

    frequency: FloatArray
    recency: FloatArray
    T: FloatArray
    monetary: FloatArray


def model_inputs(rows: Sequence[Any], today: date, time_unit: str) -> Inputs:
    """frequency = purchase days - 1, recency = last - first day, T = today - first day,
    monetary = repeat spend / frequency in major units (0 without repeats).

    `rows` have purchase_days, first_day, last_day, repeat_spend_minor and currency; all
    must have a purchase.
    """
    unit = DAYS_PER_UNIT[time_unit]
    frequency = np.array([row.purchase_days - 1 for row in rows], dtype=np.float64)
    recency = np.array([(row.last_day - row.first_day).days for row in rows], dtype=np.float64)
    # A purchase stamped after "today" (clock skew, a zone edge) must not make T < recency.
    age = np.array([max((today - row.first_day).days, 0) for row in rows], dtype=np.float64)
    age = np.maximum(age, recency)
    spend = np.array(
        [row.repeat_spend_minor / minor_per_major(row.currency) for row in rows], dtype=np.float64
    )
    monetary = np.divide(spend, frequency, out=np.zeros_like(spend), where=frequency > 0)
    return Inputs(frequency, recency / unit, age / unit, np.maximum(monetary, 0.0))


@dataclass(frozen=True)
class StoredFit:
    """A `fits` row, with its parameters as stored."""

    id: int
    model: str
    params: dict[str, Any]
    time_unit: str


@dataclass(frozen=True)
class CurrentFits:
    """The latest fit of each model (None before the first refit)."""

    bgnbd: StoredFit | None = None
    gamma_gamma: StoredFit | None = None
    rfm: StoredFit | None = None


async def current_fits(session: AsyncSession) -> CurrentFits:
    """The newest row of each model."""
    rows = await session.execute(
        select(fits.c.id, fits.c.model, fits.c.params, fits.c.time_unit)
        .ext(distinct_on(fits.c.model))
        .order_by(fits.c.model, fits.c.id.desc())
    )
    found = {
        row.model: StoredFit(int(row.id), row.model, dict(row.params), row.time_unit)
        for row in rows
    }
    return CurrentFits(found.get("bgnbd"), found.get("gamma_gamma"), found.get("rfm"))


@dataclass(frozen=True)
class Scores:
    """One customer's scores; all None when the customer has none."""

    fit_id: int | None = None
    p_alive: float | None = None
    churn_risk: float | None = None
    churn_band: str | None = None
    expected_purchases: float | None = None
    clv: float | None = None
    rfm_r: int | None = None
    rfm_f: int | None = None
    rfm_m: int | None = None
    rfm_segment: str | None = None


def churn_band(churn_risk: float, bands: dict[str, float]) -> str:
    """The band with the highest lower bound that `churn_risk` reaches."""
    ordered = sorted(bands.items(), key=lambda item: item[1])
    chosen = ordered[0][0]
    for name, lowest in ordered:
        if churn_risk >= lowest:
            chosen = name
    return chosen


def per_unit_discount(annual_rate: float, time_unit: str) -> float:
    """The discount rate per time unit equivalent to `annual_rate` (compounded)."""
    return float((1.0 + annual_rate) ** (DAYS_PER_UNIT[time_unit] / 365.0) - 1.0)


def _bgnbd_scores(
    fit: StoredFit, gg_fit: StoredFit | None, rows: Sequence[Any], today: date, settings: Settings
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(P(alive), expected purchases, discounted CLV) in the fit's time unit."""
    bg = BgNbdParams(**fit.params)
    gg = GammaGammaParams(**gg_fit.params) if gg_fit is not None else None
    inputs = model_inputs(rows, today, fit.time_unit)
    horizon = settings.scoring_horizon_days / DAYS_PER_UNIT[fit.time_unit]
    alive = probability_alive(bg, inputs.frequency, inputs.recency, inputs.T)
    expected = expected_purchases(bg, horizon, inputs.frequency, inputs.recency, inputs.T)
    value = discounted_clv(
        bg,
        gg,
        inputs.frequency,
        inputs.recency,
        inputs.T,
        inputs.monetary,
        horizon=horizon,
        margin=settings.scoring_margin,
        discount_rate_per_unit=per_unit_discount(
            settings.scoring_annual_discount_rate, fit.time_unit
        ),
    )
    return alive, expected, value


def rfm_values(rows: Sequence[Any], today: date) -> dict[str, FloatArray]:
    """Per customer, the RFM axes with larger = better, as `quintile_edges` wants them.

    Recency is minus the days since the last purchase; frequency the orders; monetary
    the net spend in major units.
    """
    return {
        "recency": np.array([-(today - row.last_day).days for row in rows], dtype=float),
        "frequency": np.array([row.orders for row in rows], dtype=float),
        "monetary": np.array(
            [row.spend_minor / minor_per_major(row.currency) for row in rows], dtype=float
        ),
    }


def _rfm_scores(fit: StoredFit, rows: Sequence[Any], today: date) -> list[tuple[int, int, int]]:
    values = rfm_values(rows, today)
    r, f, m = (quintile(values[axis], fit.params[axis]) for axis in RFM_AXES)
    return [(int(a), int(b), int(c)) for a, b, c in zip(r, f, m, strict=True)]


def compute(
    rows: Sequence[Any], current: CurrentFits, *, today: date, settings: Settings
) -> list[Scores]:
    """The scores of `customers` rows, in order (pure: no database)."""
    results = [Scores() for _ in rows]
    scorable = [i for i, row in enumerate(rows) if row.status == ACTIVE and row.purchase_days > 0]
    if not scorable:
        return results
    picked = [rows[i] for i in scorable]
    bg_part: tuple[FloatArray, FloatArray, FloatArray] | None = None
    if current.bgnbd is not None:
        bg_part = _bgnbd_scores(current.bgnbd, current.gamma_gamma, picked, today, settings)
    rfm_part = _rfm_scores(current.rfm, picked, today) if current.rfm is not None else None
    for n, i in enumerate(scorable):
        fields: dict[str, Any] = {}
        alive = float(bg_part[0][n]) if bg_part is not None else math.nan
        if bg_part is not None and current.bgnbd is not None and math.isfinite(alive):
            risk = min(max(1.0 - alive, 0.0), 1.0)
            fields |= {
                "fit_id": current.bgnbd.id,
                "p_alive": alive,
                "churn_risk": risk,
                "churn_band": churn_band(risk, settings.scoring_churn_bands),
                "expected_purchases": max(float(bg_part[1][n]), 0.0),
                "clv": float(bg_part[2][n]),
            }
        if rfm_part is not None:
            r, f, m = rfm_part[n]
            fields |= {"rfm_r": r, "rfm_f": f, "rfm_m": m, "rfm_segment": rfm_segment(r, f, m)}
        results[i] = Scores(**fields)
    return results


def is_material(published: dict[str, Any] | None, scores: Scores, threshold: float) -> bool:
    """True when `scores` differ enough from what was last published to say so."""
    if scores.churn_band is None or scores.clv is None:
        return False
    if published is None:
        return True
    if published.get("churn_band") != scores.churn_band:
        return True
    if published.get("rfm_segment") != scores.rfm_segment:
        return True
    before = float(published.get("clv") or 0.0)
    return abs(scores.clv - before) > threshold * abs(before) if before else scores.clv != 0.0


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


async def rescore(
    session: AsyncSession,
    customer_ids: Sequence[uuid.UUID],
    *,
    now: datetime,
    settings: Settings,
    current: CurrentFits | None = None,
) -> None:
    """Recompute and store these customers' scores; publish material changes; re-segment.

    `current` lets a caller that scores many chunks load the fits once.
    """
    ids = sorted(set(customer_ids))
    if not ids:
        return
    fitted = current if current is not None else await current_fits(session)
    rows = (
        await session.execute(
            select(customers)
            .where(customers.c.customer_id.in_(ids))
            .order_by(customers.c.customer_id)
        )
    ).all()
    today = local_day(now, settings.scoring_time_zone)
    updates: list[dict[str, Any]] = []
    for row, scores in zip(
        rows, compute(rows, fitted, today=today, settings=settings), strict=True
    ):
        published = row.published
        if is_material(published, scores, settings.scoring_clv_change_threshold):
            await add_event(session, SCHEMA, _event(row, scores, published, now), source=SOURCE)
            published = {
                "churn_band": scores.churn_band,
                "rfm_segment": scores.rfm_segment,
                "clv": scores.clv,
            }
        elif scores.churn_band is None:
            published = None  # unscored now: the next score is news again
        values = {
            f"b_{k}": _finite(v) if isinstance(v, float) else v for k, v in asdict(scores).items()
        }
        updates.append(
            values | {"b_id": row.customer_id, "b_published": published, "b_scored_at": now}
        )
    if updates:
        await session.execute(
            update(customers)
            .where(customers.c.customer_id == bindparam("b_id"))
            .values(
                {
                    name: bindparam(f"b_{name}")
                    for name in (*asdict(Scores()), "published", "scored_at")
                }
            ),
            updates,
        )
    await segments.evaluate_customers(session, ids, now=now)


def _event(
    row: Any, scores: Scores, published: dict[str, Any] | None, now: datetime
) -> CustomerScored:
    previous = published or {}
    assert scores.churn_risk is not None and scores.churn_band is not None
    return CustomerScored(
        customer_id=row.customer_id,
        churn_risk=scores.churn_risk,
        churn_band=scores.churn_band,
        previous_churn_band=previous.get("churn_band"),
        clv=scores.clv or 0.0,
        expected_purchases=scores.expected_purchases or 0.0,
        rfm_segment=scores.rfm_segment,
        previous_rfm_segment=previous.get("rfm_segment"),
        fit_id=scores.fit_id,
        scored_at=now,
    )
