"""Routes of the business metrics; mounted by `services.scoring.api`.

The window is `from`..`to`, days inclusive in the scoring time zone. Without `to` it ends
today; without `from` it starts on the first day of the month eleven months before, so
the default is the last twelve calendar months. The definitions are in
`services.scoring.metrics` and docs/scoring/metrics.md.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from services.scoring import metrics
from services.scoring.models import SCHEMA
from shared.auth import ReadAuth
from shared.http.app import AppSettings, session_dependency
from shared.http.problems import validation_problem
from shared.settings import Settings

Session = Annotated[AsyncSession, session_dependency(SCHEMA)]
From = Annotated[date | None, Query(alias="from", description="First day (inclusive).")]
To = Annotated[date | None, Query(alias="to", description="Last day (inclusive); default today.")]
MAX_MONTHS = 120


class Window(BaseModel):
    start: date = Field(serialization_alias="from")
    end: date = Field(serialization_alias="to")


class RepeatPurchaseOut(BaseModel):
    customers: int = Field(description="Customers who bought in the window.")
    repeat_customers: int = Field(description="Of them, those who bought on 2+ days.")
    rate: float | None


class ChurnMonthOut(BaseModel):
    month: date
    active_before: int = Field(description="Customers who bought in the month before.")
    churned: int = Field(description="Of them, those who did not buy in this month.")
    rate: float | None
    partial: bool = Field(description="The window ends before this month does.")


class ClvOut(BaseModel):
    currency: str | None
    customers: int
    total: float
    average: float


class RevenueOut(BaseModel):
    currency: str
    customers: int
    revenue_minor: int
    top_decile_customers: int
    top_decile_revenue_minor: int
    top_decile_share: float | None


class SummaryOut(BaseModel):
    window: Window
    repeat_purchase: RepeatPurchaseOut
    churn: list[ChurnMonthOut]
    clv: list[ClvOut]
    revenue: list[RevenueOut]


class CohortOut(BaseModel):
    month: date = Field(description="The month of the cohort's first purchase.")
    customers: int
    retention: list[float] = Field(
        description="Share of the cohort buying in month k after its first (k = 0, 1, ...).",
        examples=[[1.0, 0.42, 0.31]],
    )


class CohortsOut(BaseModel):
    window: Window
    cohorts: list[CohortOut]


class WhatIfCurrencyOut(BaseModel):
    currency: str | None
    customers: int
    clv: float
    clv_after: float
    gained: float


class WhatIfOut(BaseModel):
    """CLV gained if monthly retention r became min(1, r (1 + retention_uplift))."""

    window: Window
    retention_uplift: float
    baseline_retention: float | None = Field(description="Monthly; null without history.")
    improved_retention: float | None
    horizon_months: float
    monthly_discount_rate: float
    clv_multiplier: float | None = Field(description="S(r') / S(r), see the docs.")
    currencies: list[WhatIfCurrencyOut]


def _window(start: date | None, end: date | None, settings: Settings) -> Window:
    today = datetime.now(UTC).astimezone(ZoneInfo(settings.scoring_time_zone)).date()
    end = end or today
    start = start or metrics.add_months(metrics.month_start(end), -11)
    if start > end:
        raise validation_problem("query.from", "from must not be after to")
    if len(metrics.months_between(start, end)) > MAX_MONTHS:
        raise validation_problem("query.from", f"the window spans at most {MAX_MONTHS} months")
    return Window(start=start, end=end)


def routes() -> APIRouter:
    """The metrics routes."""
    router = APIRouter(tags=["scoring"])

    @router.get("/metrics/summary")
    async def summary(
        session: Session, settings: AppSettings, _: ReadAuth, start: From = None, end: To = None
    ) -> SummaryOut:
        """Repeat-purchase rate, churn per month, CLV and revenue concentration."""
        window = _window(start, end, settings)
        s, e = window.start, window.end
        return SummaryOut(
            window=window,
            repeat_purchase=RepeatPurchaseOut(**vars(await metrics.repeat_purchase(session, s, e))),
            churn=[ChurnMonthOut(**vars(m)) for m in await metrics.churn_by_month(session, s, e)],
            clv=[ClvOut(**vars(c)) for c in await metrics.clv_totals(session)],
            revenue=[RevenueOut(**vars(r)) for r in await metrics.revenue(session, s, e)],
        )

    @router.get("/metrics/cohorts")
    async def cohorts(
        session: Session, settings: AppSettings, _: ReadAuth, start: From = None, end: To = None
    ) -> CohortsOut:
        """Monthly retention cohorts by first purchase month."""
        window = _window(start, end, settings)
        found = await metrics.cohorts(session, window.start, window.end)
        return CohortsOut(window=window, cohorts=[CohortOut(**vars(c)) for c in found])

    @router.get("/metrics/what-if")
    async def what_if(
        session: Session,
        settings: AppSettings,
        _: ReadAuth,
        retention_uplift: Annotated[
            float, Query(gt=0, le=10, description="0.05: retention five percent higher.")
        ],
        retention: Annotated[
            float | None,
            Query(ge=0, le=1, description="Baseline monthly retention; default: observed."),
        ] = None,
        start: From = None,
        end: To = None,
    ) -> WhatIfOut:
        """The CLV gained if customer retention improved by `retention_uplift`."""
        window = _window(start, end, settings)
        found = await metrics.what_if(
            session,
            window.start,
            window.end,
            retention_uplift=retention_uplift,
            retention=retention,
            horizon_days=settings.scoring_horizon_days,
            annual_discount_rate=settings.scoring_annual_discount_rate,
        )
        return WhatIfOut(
            window=window,
            retention_uplift=found.retention_uplift,
            baseline_retention=found.baseline_retention,
            improved_retention=found.improved_retention,
            horizon_months=found.horizon_months,
            monthly_discount_rate=found.monthly_discount_rate,
            clv_multiplier=found.clv_multiplier,
            currencies=[WhatIfCurrencyOut(**vars(c)) for c in found.currencies],
        )

    return router
