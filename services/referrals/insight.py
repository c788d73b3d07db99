"""How the referral programme performs: the aggregate queries behind the insight routes.

Every answer is one SQL statement, so its numbers come from one snapshot and agree with
each other. Figures are a cohort: the referrals attributed in `[start, end)` and the
rewards of those referrals, wherever in time the rewards themselves fell.

`qualified` counts every referral that ever qualified (`qualified_at` is set), including
those reversed since by a refund: the friend did convert, and the reversal shows up in
the reversed points instead. `attributed` counts every referral but the rejected ones,
which review judged never to have been real.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BigInteger, ColumnElement, and_, exists, func, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from services.referrals.models import customers, referrals, rewards

STATUSES = (
    "pending",
    "flagged",
    "qualified",
    "unqualified",
    "expired",
    "rejected",
    "reversed",
)
ROLES = ("referrer", "referee")


@dataclass(frozen=True)
class RoleRewards:
    """Rewards of one side: all ever given, and those taken back since."""

    count: int
    points: int
    reversed_count: int
    reversed_points: int

    @property
    def net_points(self) -> int:
        return self.points - self.reversed_points


@dataclass(frozen=True)
class ProgrammeStats:
    """The programme's totals over a cohort of referrals."""

    by_status: dict[str, int]
    attributed: int
    qualified: int
    rewards: dict[str, RoleRewards]

    @property
    def conversion_rate(self) -> float | None:
        """Qualified per attributed referral; None when nothing was attributed."""
        return self.qualified / self.attributed if self.attributed else None


@dataclass(frozen=True)
class ReferrerStats:
    """One referrer's referrals and what they earned from them."""

    known: bool
    invited: int
    pending: int
    flagged: int
    qualified: int
    rewards: int
    points: int
    reversed_points: int


@dataclass(frozen=True)
class TopReferrer:
    """One line of the leaderboard."""

    customer_id: uuid.UUID
    invited: int
    qualified: int
    points: int


def _window(start: datetime | None, end: datetime | None) -> ColumnElement[bool]:
    conditions: list[ColumnElement[bool]] = [true()]
    if start is not None:
        conditions.append(referrals.c.attributed_at >= start)
    if end is not None:
        conditions.append(referrals.c.attributed_at < end)
    return and_(*conditions)


def _count(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.count().filter(condition)


def _points(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.coalesce(func.sum(rewards.c.points).filter(condition), 0).cast(BigInteger)


async def programme_stats(
    session: AsyncSession, start: datetime | None, end: datetime | None
) -> ProgrammeStats:
    """Referrals by status, conversion and the rewards they earned, in one statement."""
    window = _window(start, end)
    counts = (
        select(
            *(_count(referrals.c.status == s).label(f"status_{s}") for s in STATUSES),
            _count(referrals.c.status != "rejected").label("attributed"),
            _count(referrals.c.qualified_at.is_not(None)).label("ever_qualified"),
        )
        .where(window)
        .subquery("counts")
    )
    figures = []
    for role in ROLES:
        mine = rewards.c.role == role
        taken_back = and_(mine, rewards.c.status == "reversed")
        figures += [
            _count(mine).label(f"{role}_count"),
            _points(mine).label(f"{role}_points"),
            _count(taken_back).label(f"{role}_reversed_count"),
            _points(taken_back).label(f"{role}_reversed_points"),
        ]
    given = (
        select(*figures)
        .select_from(rewards)
        .join(referrals, referrals.c.id == rewards.c.referral_id)
        .where(window)
        .subquery("given")
    )
    # Two one-row subqueries side by side: the join is deliberately unconditional.
    both = counts.join(given, true())
    row = (await session.execute(select(counts, given).select_from(both))).one()._mapping
    return ProgrammeStats(
        by_status={status: int(row[f"status_{status}"]) for status in STATUSES},
        attributed=int(row["attributed"]),
        qualified=int(row["ever_qualified"]),
        rewards={
            role: RoleRewards(
                count=int(row[f"{role}_count"]),
                points=int(row[f"{role}_points"]),
                reversed_count=int(row[f"{role}_reversed_count"]),
                reversed_points=int(row[f"{role}_reversed_points"]),
            )
            for role in ROLES
        },
    )


async def referrer_stats(
    session: AsyncSession,
    customer_id: uuid.UUID,
    start: datetime | None,
    end: datetime | None,
) -> ReferrerStats:
    """What one customer's invitations came to, in one statement.

    Rewards are those of the referrer's side of its referrals; `points` is net of
    reversals (what the referrer keeps).
    """
    known = exists().where(customers.c.customer_id == customer_id)
    statement = (
        select(
            known.label("known"),
            func.count(referrals.c.id).label("referrals"),
            _count(referrals.c.status != "rejected").label("invited"),
            _count(referrals.c.status == "pending").label("pending"),
            _count(referrals.c.status == "flagged").label("flagged"),
            _count(referrals.c.qualified_at.is_not(None)).label("qualified"),
            _count(rewards.c.status == "rewarded").label("rewards"),
            _points(rewards.c.status == "rewarded").label("points"),
            _points(rewards.c.status == "reversed").label("reversed_points"),
        )
        .select_from(referrals)
        # One referrer reward per referral at most (unique referral_id, role), so the
        # join does not multiply the referral counts.
        .outerjoin(
            rewards,
            and_(rewards.c.referral_id == referrals.c.id, rewards.c.role == "referrer"),
        )
        .where(referrals.c.referrer_id == customer_id, _window(start, end))
    )
    row = (await session.execute(statement)).one()
    return ReferrerStats(
        known=bool(row.known) or row.referrals > 0,
        invited=int(row.invited),
        pending=int(row.pending),
        flagged=int(row.flagged),
        qualified=int(row.qualified),
        rewards=int(row.rewards),
        points=int(row.points),
        reversed_points=int(row.reversed_points),
    )


async def top_referrers(
    session: AsyncSession, limit: int, start: datetime | None, end: datetime | None
) -> list[TopReferrer]:
    """The referrers with the most qualified friends, then the most points kept."""
    qualified = _count(referrals.c.qualified_at.is_not(None))
    points = _points(rewards.c.status == "rewarded")
    statement = (
        select(
            referrals.c.referrer_id,
            _count(referrals.c.status != "rejected").label("invited"),
            qualified.label("qualified"),
            points.label("points"),
        )
        .select_from(referrals)
        .outerjoin(
            rewards,
            and_(rewards.c.referral_id == referrals.c.id, rewards.c.role == "referrer"),
        )
        .where(_window(start, end), referrals.c.status != "rejected")
        .group_by(referrals.c.referrer_id)
        .order_by(qualified.desc(), points.desc(), referrals.c.referrer_id)
        .limit(limit)
    )
    return [
        TopReferrer(
            customer_id=row.referrer_id,
            invited=int(row.invited),
            qualified=int(row.qualified),
            points=int(row.points),
        )
        for row in await session.execute(statement)
    ]
