"""Business metrics: repeat purchases, churn, retention cohorts, CLV, revenue concentration.

Every figure is a SQL aggregate over `purchases` and `customers`; Python only loops over
the (few) months and currencies of the answer, never over customers.

Definitions (the window is `start`..`end`, both days inclusive, in the scoring time zone
that `purchases.day` is already in):

* A purchase counts if it is not fully refunded; revenue is net of refunds.
* Repeat-purchase rate: customers with purchases on two or more distinct days in the
  window, over customers with purchases on at least one.
* Churn rate of month M: of the customers who bought in month M-1, the share who did not
  buy in M. The months are those the window touches; the last is `partial` when the
  window ends before the month does (its churn is then overstated).
* Retention cohorts: customers by the month of their first purchase ever (cohorts that
  start in the window); share `k` of a cohort is the part of it that bought in month
  cohort+k, for every month up to the window's end.
* CLV: the stored per-customer CLV (discounted, over the scoring horizon) of active
  customers, total and average, per currency.
* Top decile share: the revenue in the window of the top tenth of buying customers (the
  ceiling of n / 10, at least one; ties broken by customer id) over all revenue, per
  currency.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# As in `services.scoring.state`: a purchase counts unless refunds took it to zero.
_COUNTED = "NOT (p.refunded_minor > 0 AND p.refunded_minor >= p.total_minor)"


@dataclass(frozen=True)
class RepeatPurchase:
    customers: int
    repeat_customers: int
    rate: float | None


@dataclass(frozen=True)
class ChurnMonth:
    month: date
    active_before: int
    churned: int
    rate: float | None
    partial: bool


@dataclass(frozen=True)
class Cohort:
    month: date
    customers: int
    retention: list[float]


@dataclass(frozen=True)
class ClvTotals:
    currency: str | None
    customers: int
    total: float
    average: float


@dataclass(frozen=True)
class Revenue:
    currency: str
    customers: int
    revenue_minor: int
    top_decile_customers: int
    top_decile_revenue_minor: int
    top_decile_share: float | None


def month_start(day: date) -> date:
    return day.replace(day=1)


def add_months(month: date, count: int) -> date:
    index = month.year * 12 + month.month - 1 + count
    return date(index // 12, index % 12 + 1, 1)


def months_between(first: date, last: date) -> list[date]:
    """The first days of the months from `first`'s to `last`'s, inclusive."""
    months, month = [], month_start(first)
    while month <= last:
        months.append(month)
        month = add_months(month, 1)
    return months


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


async def _rows(session: AsyncSession, sql: str, **params: Any) -> Sequence[Any]:
    return (await session.execute(text(sql), params)).all()


async def repeat_purchase(session: AsyncSession, start: date, end: date) -> RepeatPurchase:
    """The repeat-purchase rate in the window."""
    row = (
        await _rows(
            session,
            f"""
            SELECT count(*) AS buyers, count(*) FILTER (WHERE days >= 2) AS repeaters
            FROM (
                SELECT p.customer_id, count(DISTINCT p.day) AS days
                FROM scoring.purchases AS p
                WHERE p.day BETWEEN :start AND :end AND {_COUNTED}
                GROUP BY p.customer_id
            ) AS per_customer
            """,
            start=start,
            end=end,
        )
    )[0]
    return RepeatPurchase(row.buyers, row.repeaters, _ratio(row.repeaters, row.buyers))


async def churn_by_month(session: AsyncSession, start: date, end: date) -> list[ChurnMonth]:
    """The churn rate of each month the window touches."""
    months = months_between(start, end)
    rows = await _rows(
        session,
        f"""
        WITH active AS (
            SELECT DISTINCT p.customer_id, CAST(date_trunc('month', p.day) AS date) AS month
            FROM scoring.purchases AS p
            WHERE p.day >= :before AND p.day <= :end AND {_COUNTED}
        )
        SELECT CAST(previous.month + interval '1 month' AS date) AS month,
               count(*) AS active_before,
               count(*) FILTER (WHERE this.customer_id IS NULL) AS churned
        FROM active AS previous
        LEFT JOIN active AS this
          ON this.customer_id = previous.customer_id
         AND this.month = CAST(previous.month + interval '1 month' AS date)
        WHERE previous.month < :last
        GROUP BY 1
        """,
        before=add_months(months[0], -1),
        end=end,
        last=months[-1],
    )
    found = {row.month: row for row in rows}
    out = []
    for month in months:
        row = found.get(month)
        active, churned = (row.active_before, row.churned) if row else (0, 0)
        partial = end < add_months(month, 1) - timedelta(days=1)
        out.append(ChurnMonth(month, active, churned, _ratio(churned, active), partial))
    return out


async def cohorts(session: AsyncSession, start: date, end: date) -> list[Cohort]:
    """Monthly retention cohorts by first purchase month, for cohorts starting in the window."""
    rows = await _rows(
        session,
        f"""
        WITH active AS (
            SELECT DISTINCT p.customer_id, CAST(date_trunc('month', p.day) AS date) AS month
            FROM scoring.purchases AS p
            WHERE p.day <= :end AND {_COUNTED}
        ), first AS (
            SELECT customer_id, min(month) AS cohort FROM active GROUP BY customer_id
        )
        SELECT f.cohort,
               CAST((extract(year FROM a.month) - extract(year FROM f.cohort)) * 12
                    + extract(month FROM a.month) - extract(month FROM f.cohort) AS integer)
                   AS offset_months,
               count(*) AS customers
        FROM first AS f JOIN active AS a USING (customer_id)
        WHERE f.cohort >= :first_month
        GROUP BY 1, 2
        """,
        end=end,
        first_month=month_start(start),
    )
    counts: dict[date, dict[int, int]] = {}
    for row in rows:
        counts.setdefault(row.cohort, {})[row.offset_months] = row.customers
    last = month_start(end)
    out = []
    for month in sorted(counts):
        by_offset = counts[month]
        size = by_offset.get(0, 0)
        span = len(months_between(month, last))
        shares = [by_offset.get(k, 0) / size if size else 0.0 for k in range(span)]
        out.append(Cohort(month, size, shares))
    return out


async def clv_totals(session: AsyncSession) -> list[ClvTotals]:
    """Total and average CLV of the active, scored customers, per currency."""
    rows = await _rows(
        session,
        """
        SELECT currency, count(*) AS customers, sum(clv) AS total, avg(clv) AS average
        FROM scoring.customers
        WHERE status = 'active' AND clv IS NOT NULL
        GROUP BY currency
        ORDER BY currency NULLS LAST
        """,
    )
    return [ClvTotals(r.currency, r.customers, float(r.total), float(r.average)) for r in rows]


async def revenue(session: AsyncSession, start: date, end: date) -> list[Revenue]:
    """Revenue in the window and the share of it from the top decile of customers."""
    rows = await _rows(
        session,
        """
        WITH per_customer AS (
            SELECT p.customer_id, p.currency, sum(p.total_minor - p.refunded_minor) AS net
            FROM scoring.purchases AS p
            WHERE p.day BETWEEN :start AND :end
            GROUP BY p.customer_id, p.currency
            HAVING sum(p.total_minor - p.refunded_minor) > 0
        ), ranked AS (
            SELECT currency, net,
                   row_number() OVER (PARTITION BY currency ORDER BY net DESC, customer_id)
                       AS position,
                   count(*) OVER (PARTITION BY currency) AS buyers
            FROM per_customer
        )
        SELECT currency, max(buyers) AS customers, sum(net) AS revenue,
               count(*) FILTER (WHERE position <= ceil(buyers / 10.0)) AS top_customers,
               sum(net) FILTER (WHERE position <= ceil(buyers / 10.0)) AS top_revenue
        FROM ranked
        GROUP BY currency
        ORDER BY currency
        """,
        start=start,
        end=end,
    )
    return [
        Revenue(
            currency=row.currency,
            customers=row.customers,
            revenue_minor=int(row.revenue),
            top_decile_customers=row.top_customers,
            top_decile_revenue_minor=int(row.top_revenue),
            top_decile_share=_ratio(int(row.top_revenue), int(row.revenue)),
        )
        for row in rows
    ]


# --- what-if: the CLV gained if retention improved -----------------------------------------
#
# The model (documented in docs/scoring/metrics.md): each customer's stored CLV is their
# P(alive)-weighted expected value over the horizon. Under a geometric retention model a
# customer who is retained each month with probability r, at a monthly discount rate d,
# is worth a margin m per month times
#
#     S(r) = sum_{t=0}^{H-1} q^t = (1 - q^H) / (1 - q),   q = r / (1 + d),
#
# over a horizon of H months (S -> (1 + d) / (1 + d - r) as H grows: the textbook
# lifespan 1 / (1 - r) when d = 0). Improving retention by X percent, r' = min(1, r (1 + X)),
# scales every customer's expected future value by S(r') / S(r), so the gain is
# total CLV * (S(r') / S(r) - 1). r is the observed monthly retention (one minus the pooled
# churn rate of the window's complete months) unless the caller gives one.


@dataclass(frozen=True)
class WhatIfCurrency:
    currency: str | None
    customers: int
    clv: float
    clv_after: float
    gained: float


@dataclass(frozen=True)
class WhatIf:
    retention_uplift: float
    baseline_retention: float | None
    improved_retention: float | None
    horizon_months: float
    monthly_discount_rate: float
    clv_multiplier: float | None
    currencies: list[WhatIfCurrency]


def horizon_value(retention: float, monthly_discount: float, months: float) -> float:
    """S(r): the discounted expected number of months a retained customer still buys."""
    q = retention / (1 + monthly_discount)
    if abs(1 - q) < 1e-12:
        return months
    return (1 - float(q**months)) / (1 - q)


def observed_retention(churn: Sequence[ChurnMonth]) -> float | None:
    """One minus the pooled churn rate of the complete months (None without any data)."""
    complete = [month for month in churn if not month.partial]
    active = sum(month.active_before for month in complete)
    churned = sum(month.churned for month in complete)
    return None if active == 0 else 1 - churned / active


async def what_if(
    session: AsyncSession,
    start: date,
    end: date,
    *,
    retention_uplift: float,
    retention: float | None,
    horizon_days: int,
    annual_discount_rate: float,
) -> WhatIf:
    """The CLV gained, per currency, if monthly retention rose by `retention_uplift`."""
    if retention is None:
        retention = observed_retention(await churn_by_month(session, start, end))
    months = horizon_days / (365.25 / 12)
    monthly_discount = (1 + annual_discount_rate) ** (1 / 12) - 1
    totals = await clv_totals(session)
    if retention is None:
        improved = multiplier = None
    else:
        improved = min(1.0, retention * (1 + retention_uplift))
        baseline = horizon_value(retention, monthly_discount, months)
        multiplier = horizon_value(improved, monthly_discount, months) / baseline
    return WhatIf(
        retention_uplift=retention_uplift,
        baseline_retention=retention,
        improved_retention=improved,
        horizon_months=months,
        monthly_discount_rate=monthly_discount,
        clv_multiplier=multiplier,
        currencies=[
            WhatIfCurrency(
                currency=total.currency,
                customers=total.customers,
                clv=total.total,
                clv_after=total.total * (multiplier or 1.0),
                gained=total.total * ((multiplier or 1.0) - 1),
            )
            for total in totals
        ],
    )
