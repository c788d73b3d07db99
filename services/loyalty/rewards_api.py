"""Routes of the rewards catalogue and of redemptions; mounted by `services.loyalty.api`.

The request and response bodies live here rather than in `schemas.py` to keep this
feature in its own modules; the rules are in `services.loyalty.rewards`.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from sqlalchemy.ext.asyncio import AsyncSession

from services.loyalty import rewards
from services.loyalty.models import SCHEMA
from shared.auth import AdminAuth, PosAuth, ReadAuth
from shared.http.app import session_dependency
from shared.http.problems import Problem

Session = Annotated[AsyncSession, session_dependency(SCHEMA)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Description = Annotated[str, StringConstraints(strip_whitespace=True, max_length=1000)]
Points = Annotated[int, Field(gt=0, le=10**9)]
T = TypeVar("T")
RedemptionStatus = Literal["reserved", "confirmed", "released", "expired"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RewardIn(Strict):
    """A catalogue entry. `stock` null means unlimited, `tiers` null means every member."""

    name: Text = Field(examples=["Free latte"])
    description: Description | None = None
    points_cost: Points = Field(examples=[300])
    valid_days: int = Field(default=30, ge=1, le=3650, description="Voucher validity.")
    stock: int | None = Field(default=None, ge=0, le=10**9)
    per_member_limit: int | None = Field(default=None, ge=1, le=10**6)
    tiers: list[Text] | None = Field(default=None, min_length=1, max_length=50)
    active: bool = True


class RewardPatch(Strict):
    """The fields to change; `stock`, `per_member_limit`, `tiers` may be set to null."""

    name: Text | None = None
    description: Description | None = None
    points_cost: Points | None = None
    valid_days: int | None = Field(default=None, ge=1, le=3650)
    stock: int | None = Field(default=None, ge=0, le=10**9)
    per_member_limit: int | None = Field(default=None, ge=1, le=10**6)
    tiers: list[Text] | None = Field(default=None, min_length=1, max_length=50)
    active: bool | None = None

    @model_validator(mode="after")
    def _required_not_null(self) -> RewardPatch:
        for name in ("name", "points_cost", "valid_days", "active"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class RewardOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    description: str | None
    points_cost: int
    valid_days: int
    stock: int | None
    per_member_limit: int | None
    tiers: list[str] | None
    active: bool
    created_at: datetime


class RedemptionIn(Strict):
    """Exactly one of `reward_id` (a catalogue reward) or `points` (points as payment)."""

    customer_id: uuid.UUID
    reward_id: uuid.UUID | None = None
    points: Points | None = Field(default=None, examples=[500])
    amount_minor: int | None = Field(
        default=None, ge=0, le=10**12, description="What the points pay, for the receipt."
    )
    currency: str | None = Field(default=None, pattern="^[A-Z]{3}$", examples=["MYR"])
    store_id: str | None = Field(default=None, max_length=64)
    order_ref: str | None = Field(default=None, max_length=100)

    @model_validator(mode="after")
    def _one_kind(self) -> RedemptionIn:
        if (self.reward_id is None) == (self.points is None):
            raise ValueError("give exactly one of reward_id or points")
        if self.reward_id is not None and (self.amount_minor, self.currency) != (None, None):
            raise ValueError("amount_minor and currency go with points, not with a reward")
        if (self.amount_minor is None) != (self.currency is None):
            raise ValueError("amount_minor and currency go together")
        return self


class ConfirmIn(Strict):
    order_ref: str | None = Field(default=None, max_length=100, description="The sale.")


class RedemptionOut(BaseModel):
    """A redemption; `voucher_code` is what the till prints or scans."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    customer_id: uuid.UUID
    kind: str = Field(examples=["reward", "payment"])
    reward_id: uuid.UUID | None
    points: int
    amount_minor: int | None
    currency: str | None
    voucher_code: str = Field(examples=["7KQ9XM2HRT"])
    status: str = Field(examples=["reserved", "confirmed", "released", "expired"])
    store_id: str | None
    order_ref: str | None
    reserved_until: datetime | None
    valid_until: datetime | None
    created_at: datetime
    settled_at: datetime | None


async def _refusals(work: Awaitable[T]) -> T:
    """Run domain work, answering its refusals as problems (the request then rolls back)."""
    try:
        return await work
    except rewards.RedemptionRefused as exc:
        raise Problem(exc.status, exc.kind, exc.title, exc.detail, **exc.extra) from exc


def _reward_not_found(reward_id: uuid.UUID) -> Problem:
    return Problem(404, "reward-not-found", "Reward not found", f"No reward {reward_id}.")


def routes() -> APIRouter:
    """The rewards and redemption routes."""
    router = APIRouter(tags=["loyalty"])

    @router.post("/rewards", status_code=201)
    async def create_reward(
        body: RewardIn, session: Session, _: AdminAuth, response: Response
    ) -> RewardOut:
        """Add a reward to the catalogue."""
        reward = await rewards.create_reward(session, body.model_dump(), datetime.now(UTC))
        response.headers["Location"] = f"/v1/loyalty/rewards/{reward.id}"
        return RewardOut.model_validate(reward)

    @router.get("/rewards")
    async def list_rewards(
        session: Session,
        _: ReadAuth,
        active: bool | None = None,
        after: Annotated[uuid.UUID | None, Query(description="Cursor: the last id seen")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> list[RewardOut]:
        """The catalogue, by id; page on with `after` = the last id of the previous page."""
        found = await rewards.list_rewards(session, active=active, after=after, limit=limit)
        return [RewardOut.model_validate(reward) for reward in found]

    @router.get("/rewards/{reward_id}")
    async def get_reward(reward_id: uuid.UUID, session: Session, _: ReadAuth) -> RewardOut:
        """One reward."""
        reward = await rewards.get_reward(session, reward_id)
        if reward is None:
            raise _reward_not_found(reward_id)
        return RewardOut.model_validate(reward)

    @router.patch("/rewards/{reward_id}")
    async def update_reward(
        reward_id: uuid.UUID, body: RewardPatch, session: Session, _: AdminAuth
    ) -> RewardOut:
        """Change a reward: switch it off, restock it, reprice it."""
        values: dict[str, Any] = body.model_dump(include=body.model_fields_set)
        reward = await rewards.update_reward(session, reward_id, values)
        if reward is None:
            raise _reward_not_found(reward_id)
        return RewardOut.model_validate(reward)

    @router.post("/redemptions", status_code=201)
    async def reserve(
        body: RedemptionIn, session: Session, principal: PosAuth, response: Response
    ) -> RedemptionOut:
        """Reserve points for a reward or as payment and get a voucher code (409: too few)."""
        redemption = await _refusals(
            rewards.reserve(
                session,
                customer_id=body.customer_id,
                reward_id=body.reward_id,
                points=body.points,
                amount_minor=body.amount_minor,
                currency=body.currency,
                store_id=principal.store_for(body.store_id),
                order_ref=body.order_ref,
                now=datetime.now(UTC),
            )
        )
        response.headers["Location"] = f"/v1/loyalty/redemptions/{redemption.id}"
        return RedemptionOut.model_validate(redemption)

    @router.get("/redemptions/{redemption_id}")
    async def get_redemption(
        redemption_id: uuid.UUID, session: Session, _: ReadAuth
    ) -> RedemptionOut:
        """One redemption."""
        found = await rewards.get_redemption(session, redemption_id=redemption_id)
        if found is None:
            raise Problem(
                404,
                "redemption-not-found",
                "Redemption not found",
                f"No redemption {redemption_id}.",
            )
        return RedemptionOut.model_validate(found)

    @router.get("/members/{customer_id}/redemptions")
    async def member_redemptions(
        customer_id: uuid.UUID,
        session: Session,
        _: ReadAuth,
        status: RedemptionStatus | None = None,
        before: Annotated[
            uuid.UUID | None,
            Query(description="Cursor: the id of the last redemption of the previous page"),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> list[RedemptionOut]:
        """A member's redemptions, newest first; page on with `before` = the last id seen."""
        found = await _refusals(
            rewards.member_redemptions(
                session, customer_id, status=status, before=before, limit=limit
            )
        )
        return [RedemptionOut.model_validate(redemption) for redemption in found]

    @router.get("/vouchers/{code}")
    async def get_voucher(code: str, session: Session, _: ReadAuth) -> RedemptionOut:
        """The redemption behind a voucher code, as the till scans or types it."""
        found = await rewards.get_redemption(session, voucher=code)
        if found is None:
            raise Problem(404, "voucher-not-found", "Voucher not found", f"No voucher {code}.")
        return RedemptionOut.model_validate(found)

    @router.post("/redemptions/{redemption_id}/confirm")
    async def confirm(
        redemption_id: uuid.UUID, session: Session, _: PosAuth, body: ConfirmIn | None = None
    ) -> RedemptionOut:
        """The sale completed: make the redemption final (confirming again is harmless)."""
        confirmed = await _refusals(
            rewards.confirm(
                session,
                redemption_id,
                order_ref=body.order_ref if body else None,
                now=datetime.now(UTC),
            )
        )
        return RedemptionOut.model_validate(confirmed)

    @router.post("/redemptions/{redemption_id}/release")
    async def release(redemption_id: uuid.UUID, session: Session, _: PosAuth) -> RedemptionOut:
        """The sale was cancelled: points and stock go back (409 once confirmed)."""
        released = await _refusals(rewards.release(session, redemption_id, now=datetime.now(UTC)))
        return RedemptionOut.model_validate(released)

    return router
