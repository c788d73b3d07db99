"""Tiers: qualification over a rolling window, upgrades at once, downgrades at review.

A tier qualifies a member when the member's measure over the tier's window reaches its
threshold: `spend` is the purchases' total less refunds (minor units, summed as stored:
one currency per deployment), `points` the points purchases earned less what refunds took
back. The member holds the highest-ranked tier that qualifies.

* `reevaluate` (after a purchase or a refund) only ever moves a member up: a refund or
  an old purchase leaving the window never costs a tier mid-period.
* `review_tiers` (a scheduled job) looks at members whose `tier_review_at` has passed:
  one that still qualifies keeps the tier for another period; one that does not drops to
  the highest tier it qualifies for now (possibly none).

Every change sets `tier_since` and `tier_review_at = tier_since + REVIEW_PERIOD_MONTHS`,
appends to `tier_changes` and publishes `tier.changed` in the same transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, Uuid, any_, bindparam, func, insert, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.loyalty import ledger
from services.loyalty.dates import add_months
from services.loyalty.earning import EarningRules
from services.loyalty.models import SCHEMA, members, purchases, tier_changes, tiers
from shared.events.loyalty import TierChanged
from shared.pipeline.outbox import add_event
from shared.settings import Settings

SOURCE = "loyalty"
REVIEW_PERIOD_MONTHS = 12
REVIEW_BATCH = 500
NO_BENEFITS = (Decimal(1), Decimal(0))


@dataclass(frozen=True)
class Tier:
    """One rung of the ladder."""

    name: str
    rank: int
    basis: str
    threshold: int
    window_days: int
    earn_multiplier: Decimal
    discount_percent: Decimal


@dataclass(frozen=True)
class Change:
    """A tier change that was applied."""

    customer_id: uuid.UUID
    previous_tier: str | None
    tier: str | None
    direction: str


def tier_from(row: Any) -> Tier:
    """A `tiers` row as a `Tier`."""
    return Tier(
        name=row.name,
        rank=int(row.rank),
        basis=row.basis,
        threshold=int(row.threshold),
        window_days=int(row.window_days),
        earn_multiplier=Decimal(row.earn_multiplier),
        discount_percent=Decimal(row.discount_percent),
    )


async def ladder(session: AsyncSession) -> list[Tier]:
    """All tiers, lowest rank first."""
    rows = await session.execute(select(tiers).order_by(tiers.c.rank))
    return [tier_from(row) for row in rows]


def best_tier(ladder: list[Tier], measures: dict[tuple[str, int], int]) -> Tier | None:
    """The highest-ranked tier whose threshold the measure (basis, window) reaches."""
    qualified = [t for t in ladder if measures.get((t.basis, t.window_days), 0) >= t.threshold]
    return max(qualified, key=lambda t: t.rank, default=None)


def rank_of(ladder: list[Tier], name: str | None) -> int | None:
    """The rank of the tier called `name`; None for no tier or one no longer defined."""
    return next((t.rank for t in ladder if t.name == name), None)


_MEASURE_STATEMENTS: dict[tuple[tuple[tuple[str, int], ...], bool], Select[tuple[Any, ...]]] = {}


def _measure_statement(
    pairs: tuple[tuple[str, int], ...], *, many: bool = False
) -> Select[tuple[Any, ...]]:
    """One SELECT summing every (basis, window) over its own window (built once).

    `many`: for the customers of the array `customer_ids`, one row each, led by the id.
    """
    statement = _MEASURE_STATEMENTS.get((pairs, many))
    if statement is None:
        columns = []
        for index, (basis, _) in enumerate(pairs):
            amount = (
                purchases.c.total_minor - purchases.c.refunded_minor
                if basis == "spend"
                else purchases.c.points - purchases.c.points_reversed
            )
            since = bindparam(f"since_{index}", type_=purchases.c.purchased_at.type)
            columns.append(
                func.coalesce(func.sum(amount).filter(purchases.c.purchased_at > since), 0)
            )
        window = (
            purchases.c.purchased_at > bindparam("since", type_=purchases.c.purchased_at.type),
            purchases.c.purchased_at <= bindparam("now", type_=purchases.c.purchased_at.type),
        )
        if many:
            ids = bindparam("customer_ids", type_=ARRAY(Uuid()))
            statement = (
                select(purchases.c.customer_id, *columns)
                .where(purchases.c.customer_id == any_(ids), *window)
                .group_by(purchases.c.customer_id)
            )
        else:
            statement = select(*columns).where(
                purchases.c.customer_id == bindparam("customer_id"), *window
            )
        _MEASURE_STATEMENTS[(pairs, many)] = statement
    return statement


def _measure_params(
    ladder: list[Tier], now: datetime
) -> tuple[tuple[tuple[str, int], ...], dict[str, Any]]:
    pairs = tuple(sorted({(t.basis, t.window_days) for t in ladder}))
    starts = [now - timedelta(days=window_days) for _, window_days in pairs]
    params: dict[str, Any] = {"since": min(starts, default=now), "now": now}
    params.update({f"since_{index}": start for index, start in enumerate(starts)})
    return pairs, params


async def measures_of(
    session: AsyncSession, customer_id: uuid.UUID, ladder: list[Tier], now: datetime
) -> dict[tuple[str, int], int]:
    """Spend and points per (basis, window_days) the ladder needs, over (now - window, now]."""
    pairs, params = _measure_params(ladder, now)
    if not pairs:
        return {}
    totals = (
        await session.execute(_measure_statement(pairs), {"customer_id": customer_id, **params})
    ).one()
    return {pair: int(total) for pair, total in zip(pairs, totals, strict=True)}


async def measures_of_many(
    session: AsyncSession, customer_ids: list[uuid.UUID], ladder: list[Tier], now: datetime
) -> dict[uuid.UUID, dict[tuple[str, int], int]]:
    """`measures_of` for many customers in one statement."""
    pairs, params = _measure_params(ladder, now)
    measures: dict[uuid.UUID, dict[tuple[str, int], int]] = {
        customer_id: dict.fromkeys(pairs, 0) for customer_id in customer_ids
    }
    if not pairs or not customer_ids:
        return measures
    rows = await session.execute(
        _measure_statement(pairs, many=True), {"customer_ids": customer_ids, **params}
    )
    for customer_id, *totals in rows:
        measures[customer_id] = {
            pair: int(total) for pair, total in zip(pairs, totals, strict=True)
        }
    return measures


def upgrade_for(
    ladder: list[Tier], current: str | None, measures: dict[tuple[str, int], int]
) -> Tier | None:
    """The tier a member holding `current` moves up to at once, if any."""
    best = best_tier(ladder, measures)
    rank = rank_of(ladder, current)
    if best is None or (rank is not None and best.rank <= rank):
        return None
    return best


def tier_values(new: Tier | None, now: datetime) -> dict[str, Any]:
    """The member columns a change to `new` sets."""
    return {
        "tier": None if new is None else new.name,
        "tier_since": None if new is None else now,
        "tier_review_at": None if new is None else add_months(now, REVIEW_PERIOD_MONTHS),
        "updated_at": now,
    }


async def _change(
    session: AsyncSession,
    customer_id: uuid.UUID,
    previous: str | None,
    new: Tier | None,
    direction: str,
    reason: str,
    now: datetime,
) -> Change:
    await session.execute(
        update(members).where(members.c.customer_id == customer_id).values(tier_values(new, now))
    )
    name = None if new is None else new.name
    await session.execute(
        insert(tier_changes).values(
            customer_id=customer_id,
            previous_tier=previous,
            tier=name,
            reason=reason,
            created_at=now,
        )
    )
    await add_event(
        session,
        SCHEMA,
        TierChanged(
            customer_id=customer_id,
            previous_tier=previous,
            tier=name,
            direction=direction,
            changed_at=now,
        ),
        source=SOURCE,
    )
    return Change(customer_id, previous, name, direction)


async def reevaluate(
    session: AsyncSession,
    customer_id: uuid.UUID,
    now: datetime,
    *,
    member: Any = None,
    rungs: list[Tier] | None = None,
) -> Change | None:
    """Move the member up at once when a higher tier qualifies; never down (see review).

    `member` is the member's row when the caller already holds its lock (its tier is
    current), `rungs` the ladder when the caller already read it in this transaction.
    """
    if member is None:
        member = await ledger.lock_member(session, customer_id, now)
    if rungs is None:
        rungs = await ladder(session)
    if not rungs:
        return None
    best = upgrade_for(rungs, member.tier, await measures_of(session, customer_id, rungs, now))
    if best is None:
        return None
    return await _change(session, customer_id, member.tier, best, "up", "qualified", now)


async def review_member(
    session: AsyncSession, customer_id: uuid.UUID, now: datetime
) -> Change | None:
    """At the end of the review period: keep (renew), raise or lower the member's tier."""
    member = await ledger.lock_member(session, customer_id, now)
    if member.tier_review_at is None or member.tier_review_at > now:
        return None
    rungs = await ladder(session)
    best = best_tier(rungs, await measures_of(session, customer_id, rungs, now))
    current = rank_of(rungs, member.tier)
    best_rank = None if best is None else best.rank
    if current is not None and best_rank == current:
        # Still qualifies: another period from the review date (keeps the cadence).
        review_at = member.tier_review_at
        while review_at <= now:
            review_at = add_months(review_at, REVIEW_PERIOD_MONTHS)
        await session.execute(
            update(members)
            .where(members.c.customer_id == customer_id)
            .values(tier_review_at=review_at, updated_at=now)
        )
        return None
    if best_rank is not None and (current is None or best_rank > current):
        return await _change(session, customer_id, member.tier, best, "up", "qualified", now)
    if member.tier is None:
        await session.execute(
            update(members)
            .where(members.c.customer_id == customer_id)
            .values(tier_review_at=None, updated_at=now)
        )
        return None
    return await _change(session, customer_id, member.tier, best, "down", "review", now)


async def review_due(sessions: async_sessionmaker[AsyncSession], now: datetime) -> int:
    """Review every member whose review date has passed; one transaction per member."""
    changed = 0
    after: uuid.UUID | None = None
    while True:
        async with sessions() as session:
            statement = select(members.c.customer_id).where(members.c.tier_review_at <= now)
            if after is not None:
                statement = statement.where(members.c.customer_id > after)
            due = list(
                (
                    await session.execute(
                        statement.order_by(members.c.customer_id).limit(REVIEW_BATCH)
                    )
                ).scalars()
            )
        if not due:
            return changed
        for customer_id in due:
            async with sessions() as session, session.begin():
                if await review_member(session, customer_id, now) is not None:
                    changed += 1
        after = due[-1]


async def review_tiers(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> int:
    """Scheduled job (`shared.jobs.JobFunction`): tier reviews that are due now."""
    del settings  # the review period is a constant for now
    return await review_due(sessions, datetime.now(UTC))


async def benefits(session: AsyncSession, tier: str | None) -> tuple[Decimal, Decimal]:
    """(earn multiplier, discount percent) of `tier`; (1, 0) for none or an unknown tier."""
    if tier is None:
        return NO_BENEFITS
    row = (
        await session.execute(
            select(tiers.c.earn_multiplier, tiers.c.discount_percent).where(tiers.c.name == tier)
        )
    ).one_or_none()
    if row is None:
        return NO_BENEFITS
    return Decimal(row.earn_multiplier), Decimal(row.discount_percent)


async def with_tier_multipliers(
    session: AsyncSession, rules: EarningRules, rungs: list[Tier] | None = None
) -> EarningRules:
    """`rules` with the tier table's earn multipliers (they win over the rules' own).

    `EarningRules.tier_multipliers` stays for tiers the table does not define, so a rule
    set saved before tiers existed keeps working. `rungs`, when given, is the ladder
    already read in this transaction (the same table).
    """
    if rungs is None:
        rows = await session.execute(select(tiers.c.name, tiers.c.earn_multiplier))
        table = {name: Decimal(multiplier) for name, multiplier in rows}
    else:
        table = {t.name: t.earn_multiplier for t in rungs}
    if not table:
        return rules
    return rules.model_copy(update={"tier_multipliers": {**rules.tier_multipliers, **table}})
