"""HTTP routes of the scoring service, mounted under `/v1/scoring`.

A customer's scores are recomputed at read time from their state and the current fits
(their age keeps growing between purchases), so what a reader sees is never stale; the
stored scores are what segments and `customer.scored` were last decided on.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.scoring import gdpr_api, metrics_api, refit, scores, segments_api, state
from services.scoring.models import SCHEMA, customers, fits
from shared.auth import AdminAuth, ReadAuth
from shared.http.app import AppSettings, session_dependency
from shared.http.problems import Problem, validation_problem
from shared.runtime import Runtime

Session = Annotated[AsyncSession, session_dependency(SCHEMA)]
Model = Literal["bgnbd", "gamma_gamma", "rfm"]


class PurchaseState(BaseModel):
    """The per-customer state the models read (amounts in minor units, net of refunds)."""

    orders: int
    purchase_days: int = Field(description="Distinct days with a purchase.")
    spend_minor: int
    repeat_spend_minor: int = Field(description="Spend on days after the first purchase day.")
    average_order_minor: int | None
    currency: str | None
    first_purchase_at: datetime | None
    last_purchase_at: datetime | None
    first_day: date | None
    last_day: date | None
    stores: dict[str, int] = Field(description="Purchases by store.")
    channels: dict[str, int] = Field(description="Purchases by channel.")


class ModelInputs(BaseModel):
    """The `lifetimes` conventions, in the fit's time unit."""

    frequency: float = Field(description="Repeat purchase days.")
    recency: float
    T: float
    monetary: float = Field(description="Mean repeat spend, major units.")
    time_unit: str


class RfmOut(BaseModel):
    r: int
    f: int
    m: int
    segment: str


class ScoresOut(BaseModel):
    """Scores computed now; null parts wait for the first fit."""

    fit_id: int | None
    p_alive: float | None
    churn_risk: float | None
    churn_band: str | None
    expected_purchases: float | None = Field(description="In the horizon.")
    clv: float | None = Field(description="Discounted CLV over the horizon, major units.")
    horizon_days: int
    rfm: RfmOut | None


class CustomerOut(BaseModel):
    """A customer's state and scores."""

    customer_id: uuid.UUID
    status: str
    signed_up_at: datetime | None
    tier: str | None
    state: PurchaseState
    inputs: ModelInputs | None = Field(description="Null before a purchase or a fit.")
    scores: ScoresOut | None = Field(description="Null without a purchase, or when erased.")
    scored_at: datetime | None = Field(description="When the stored scores were last updated.")
    computed_at: datetime


class FitOut(BaseModel):
    """A stored fit."""

    id: int
    model: str
    params: dict[str, Any]
    standard_errors: dict[str, float | None]
    log_likelihood: float = Field(description="Summed over customers (0 for rfm).")
    time_unit: str
    customers: int
    diagnostics: dict[str, Any]
    trigger: str
    as_of: datetime
    created_at: datetime


class ModelOut(BaseModel):
    """The fits scores are computed from, and the settings that turn them into scores."""

    bgnbd: FitOut | None
    gamma_gamma: FitOut | None
    rfm: FitOut | None
    horizon_days: int
    margin: float
    annual_discount_rate: float
    churn_bands: dict[str, float]


class FitPage(BaseModel):
    """Fits, newest first; pass `next_cursor` as `cursor` for the next page."""

    items: list[FitOut]
    next_cursor: str | None


class RefitOut(BaseModel):
    """The fits a refit stored and how many customers it rescored."""

    fits: list[FitOut]
    rescored: int


def _fit(row: Any) -> FitOut:
    return FitOut(**dict(row._mapping))


async def _fits_by_id(session: AsyncSession, ids: list[int]) -> list[FitOut]:
    rows = await session.execute(select(fits).where(fits.c.id.in_(ids)).order_by(fits.c.id))
    return [_fit(row) for row in rows]


def _customer_view(
    row: Any, current: scores.CurrentFits, now: datetime, settings: Any
) -> CustomerOut:
    today = state.local_day(now, settings.scoring_time_zone)
    computed = scores.compute([row], current, today=today, settings=settings)[0]
    inputs = None
    if row.purchase_days > 0 and current.bgnbd is not None:
        found = scores.model_inputs([row], today, current.bgnbd.time_unit)
        inputs = ModelInputs(
            frequency=float(found.frequency[0]),
            recency=float(found.recency[0]),
            T=float(found.T[0]),
            monetary=float(found.monetary[0]),
            time_unit=current.bgnbd.time_unit,
        )
    scored = None
    if row.status == state.ACTIVE and row.purchase_days > 0:
        rfm = None
        if computed.rfm_segment is not None:
            assert computed.rfm_r is not None and computed.rfm_f is not None
            assert computed.rfm_m is not None
            rfm = RfmOut(
                r=computed.rfm_r, f=computed.rfm_f, m=computed.rfm_m, segment=computed.rfm_segment
            )
        scored = ScoresOut(
            fit_id=computed.fit_id,
            p_alive=computed.p_alive,
            churn_risk=computed.churn_risk,
            churn_band=computed.churn_band,
            expected_purchases=computed.expected_purchases,
            clv=computed.clv,
            horizon_days=settings.scoring_horizon_days,
            rfm=rfm,
        )
    aggregates = state.Aggregates.of_row(row)
    return CustomerOut(
        customer_id=row.customer_id,
        status=row.status,
        signed_up_at=row.signed_up_at,
        tier=row.tier,
        state=PurchaseState(
            **aggregates.values(),
            average_order_minor=row.spend_minor // row.orders if row.orders else None,
            currency=row.currency,
        ),
        inputs=inputs,
        scores=scored,
        scored_at=row.scored_at,
        computed_at=now,
    )


def routes() -> APIRouter:
    """The scoring routes; health and readiness come from the platform's app factory."""
    router = APIRouter(tags=["scoring"])
    router.include_router(segments_api.routes())
    router.include_router(metrics_api.routes())
    router.include_router(gdpr_api.routes())

    @router.get("/customers/{customer_id}")
    async def customer_scores(
        customer_id: uuid.UUID, session: Session, settings: AppSettings, _: ReadAuth
    ) -> CustomerOut:
        """A customer's state, churn risk, CLV and RFM, computed now."""
        survivor = await state.survivor_of(session, customer_id)
        row = (
            await session.execute(select(customers).where(customers.c.customer_id == survivor))
        ).one_or_none()
        if row is None:
            raise Problem(
                404, "customer-not-found", "Customer not found", "Scoring has no such customer."
            )
        current = await scores.current_fits(session)
        return _customer_view(row, current, datetime.now(UTC), settings)

    @router.get("/model")
    async def current_model(session: Session, settings: AppSettings, _: ReadAuth) -> ModelOut:
        """The fits in use and their diagnostics."""
        current = await scores.current_fits(session)
        ids = [f.id for f in (current.bgnbd, current.gamma_gamma, current.rfm) if f is not None]
        by_model = {fit.model: fit for fit in await _fits_by_id(session, ids)}
        return ModelOut(
            bgnbd=by_model.get("bgnbd"),
            gamma_gamma=by_model.get("gamma_gamma"),
            rfm=by_model.get("rfm"),
            horizon_days=settings.scoring_horizon_days,
            margin=settings.scoring_margin,
            annual_discount_rate=settings.scoring_annual_discount_rate,
            churn_bands=settings.scoring_churn_bands,
        )

    @router.get("/fits")
    async def fit_history(
        session: Session,
        _: ReadAuth,
        model: Model | None = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        cursor: Annotated[str | None, Query(max_length=20)] = None,
    ) -> FitPage:
        """Every stored fit, newest first; cursor-paginated."""
        query = select(fits).order_by(fits.c.id.desc()).limit(limit + 1)
        if model is not None:
            query = query.where(fits.c.model == model)
        if cursor is not None:
            if not cursor.isdigit():
                raise validation_problem("query.cursor", "not a cursor this API made")
            query = query.where(fits.c.id < int(cursor))
        rows = (await session.execute(query)).all()
        items = [_fit(row) for row in rows[:limit]]
        more = len(rows) > limit
        return FitPage(items=items, next_cursor=str(items[-1].id) if more else None)

    @router.post("/fits", status_code=201)
    async def fit_now(request: Request, settings: AppSettings, _: AdminAuth) -> RefitOut:
        """Refit the models now and rescore every customer."""
        runtime: Runtime = request.app.state.runtime
        sessions = runtime.sessions(SCHEMA)
        try:
            outcome = await refit.refit_on_demand(sessions, settings)
        except refit.NotEnoughData as exc:
            raise Problem(409, "not-enough-data", "Not enough data", str(exc)) from exc
        if outcome is None:
            raise Problem(
                409, "refit-running", "Refit running", "A refit is running; try again later."
            )
        async with sessions() as session:
            stored = await _fits_by_id(session, sorted(outcome.fit_ids.values()))
        return RefitOut(fits=stored, rescored=outcome.rescored)

    return router
