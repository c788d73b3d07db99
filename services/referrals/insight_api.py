"""Insight routes: how the programme performs, per referrer and as a leaderboard.

Read scope: these answer dashboards and the customer's "your invitations" screen. Every
route takes an optional `from` / `to` window on when the referrals were attributed
(`from` included, `to` excluded); the SQL lives in `insight.py`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from services.referrals import insight
from services.referrals.models import SCHEMA
from shared.auth import ReadAuth
from shared.http.app import session_dependency
from shared.http.problems import Problem, validation_problem

Session = Annotated[AsyncSession, session_dependency(SCHEMA)]
From = Annotated[
    AwareDatetime | None,
    Query(alias="from", description="Referrals attributed at or after this instant."),
]
To = Annotated[
    AwareDatetime | None,
    Query(alias="to", description="Referrals attributed before this instant."),
]


class Window(BaseModel):
    """The attribution window the figures cover (null: unbounded)."""

    from_: datetime | None = Field(serialization_alias="from")
    to: datetime | None


class RoleRewardsOut(BaseModel):
    """Rewards of one side of the referrals."""

    count: int = Field(description="Rewards given, reversed ones included.")
    points: int = Field(description="Points given, reversed ones included.")
    reversed_count: int
    reversed_points: int = Field(description="Points taken back after refunds.")
    net_points: int = Field(description="What the customers keep: points - reversed_points.")


class StatsOut(BaseModel):
    """The programme's totals over the referrals attributed in the window."""

    window: Window
    by_status: dict[str, int] = Field(description="Every status, zero included.")
    attributed: int = Field(description="Referrals that were not rejected in review.")
    qualified: int = Field(description="Referrals that ever qualified (reversed ones too).")
    conversion_rate: float | None = Field(
        description="qualified / attributed, from signup to qualification; null without data."
    )
    rewards: dict[str, RoleRewardsOut] = Field(description="By role: referrer and referee.")
    reversed_points: int = Field(description="Both sides' points taken back.")


class ReferrerStatsOut(BaseModel):
    """One referrer's invitations and what they earned."""

    customer_id: uuid.UUID
    window: Window
    invited: int = Field(description="Friends attributed to them (rejected ones left out).")
    pending: int = Field(description="Waiting for the friend's first purchase.")
    flagged: int = Field(description="Held for review by the abuse guards.")
    qualified: int
    rewards: int = Field(description="Referrer rewards they still hold.")
    points: int = Field(description="Points earned as referrer, net of reversals.")
    reversed_points: int


class TopReferrerOut(BaseModel):
    """One line of the leaderboard."""

    customer_id: uuid.UUID
    invited: int
    qualified: int
    points: int = Field(description="Referrer points kept from these referrals.")


def _checked(start: datetime | None, end: datetime | None) -> Window:
    if start is not None and end is not None and end <= start:
        raise validation_problem("query.to", "must be after `from`")
    return Window(from_=start, to=end)


def routes() -> APIRouter:
    """The routes of this module."""
    router = APIRouter(tags=["referrals"])

    @router.get("/stats")
    async def programme_stats(
        session: Session, _: ReadAuth, start: From = None, end: To = None
    ) -> StatsOut:
        """The programme's totals: referrals by status, conversion and rewards by role."""
        window = _checked(start, end)
        stats = await insight.programme_stats(session, start, end)
        by_role = {
            role: RoleRewardsOut(
                count=figures.count,
                points=figures.points,
                reversed_count=figures.reversed_count,
                reversed_points=figures.reversed_points,
                net_points=figures.net_points,
            )
            for role, figures in stats.rewards.items()
        }
        return StatsOut(
            window=window,
            by_status=stats.by_status,
            attributed=stats.attributed,
            qualified=stats.qualified,
            conversion_rate=stats.conversion_rate,
            rewards=by_role,
            reversed_points=sum(f.reversed_points for f in stats.rewards.values()),
        )

    @router.get("/referrers/{customer_id}/stats")
    async def referrer_stats(
        customer_id: uuid.UUID,
        session: Session,
        _: ReadAuth,
        start: From = None,
        end: To = None,
    ) -> ReferrerStatsOut:
        """One referrer's invitations: pending, flagged, qualified and points earned."""
        window = _checked(start, end)
        stats = await insight.referrer_stats(session, customer_id, start, end)
        if not stats.known:
            raise Problem(
                404, "customer-not-found", "Customer not found", f"No customer {customer_id}."
            )
        return ReferrerStatsOut(
            customer_id=customer_id,
            window=window,
            invited=stats.invited,
            pending=stats.pending,
            flagged=stats.flagged,
            qualified=stats.qualified,
            rewards=stats.rewards,
            points=stats.points,
            reversed_points=stats.reversed_points,
        )

    @router.get("/top-referrers")
    async def top_referrers(
        session: Session,
        _: ReadAuth,
        limit: Annotated[int, Query(ge=1, le=100)] = 10,
        start: From = None,
        end: To = None,
    ) -> list[TopReferrerOut]:
        """The referrers with the most qualified friends, then the most points."""
        _checked(start, end)
        found = await insight.top_referrers(session, limit, start, end)
        return [
            TopReferrerOut(
                customer_id=top.customer_id,
                invited=top.invited,
                qualified=top.qualified,
                points=top.points,
            )
            for top in found
        ]

    return router
