"""Routes for tiers and stamp cards (definitions and members' views), under `/v1/loyalty`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.loyalty import stamps, tiers
from services.loyalty.models import SCHEMA, members, stamp_card_definitions
from services.loyalty.models import tiers as tiers_table
from shared.auth import AdminAuth, ReadAuth
from shared.http.app import session_dependency
from shared.http.problems import Problem, validation_problem

Session = Annotated[AsyncSession, session_dependency(SCHEMA)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class TierIn(BaseModel):
    """A tier: who qualifies (basis, threshold, window) and what it gives."""

    model_config = ConfigDict(extra="forbid")

    rank: int = Field(ge=0, le=1000, description="Higher is better; unique.", examples=[2])
    basis: Literal["spend", "points"] = Field(examples=["spend"])
    threshold: int = Field(
        ge=0, le=10**15, description="Spend in minor units, or points.", examples=[500_000]
    )
    window_days: int = Field(gt=0, le=3660, examples=[365])
    earn_multiplier: Decimal = Field(default=Decimal(1), ge=0, le=100, examples=["1.5"])
    discount_percent: Decimal = Field(default=Decimal(0), ge=0, le=100, examples=["5"])


class TierOut(TierIn):
    name: str


class MemberTierOut(BaseModel):
    """A member's tier, its benefits and review date, and progress on every tier's measure."""

    customer_id: uuid.UUID
    tier: str | None
    tier_since: datetime | None
    tier_review_at: datetime | None
    earn_multiplier: Decimal
    discount_percent: Decimal
    progress: dict[str, int] = Field(description="Tier name -> the member's measure for it.")


class StampCardDefinitionIn(BaseModel):
    """Buy `stamps_required` items matching `skus` or `categories`; the reward is the next."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    skus: list[Name] = Field(default_factory=list, max_length=500, examples=[["LATTE-M"]])
    categories: list[Name] = Field(default_factory=list, max_length=100, examples=[["coffee"]])
    stamps_required: int = Field(gt=0, le=1000, examples=[9])
    reward_description: Name = Field(examples=["One free coffee"])
    voucher_valid_days: int = Field(default=30, gt=0, le=3660)
    active: bool = True

    @model_validator(mode="after")
    def _names_something(self) -> StampCardDefinitionIn:
        if not self.skus and not self.categories:
            raise ValueError("give at least one SKU or category")
        return self


class StampCardDefinitionOut(StampCardDefinitionIn):
    id: uuid.UUID
    created_at: datetime


class StampCardOut(BaseModel):
    id: uuid.UUID
    definition_id: uuid.UUID
    name: str
    stamps: int
    stamps_required: int
    reward_description: str
    completed_at: datetime | None
    voucher_code: str | None
    voucher_valid_until: datetime | None


def _check_ladder(body: TierIn, others: list[tiers.Tier]) -> None:
    """Unique ranks; within a basis, thresholds strictly increase with rank."""
    for other in others:
        if other.rank == body.rank:
            raise validation_problem(
                "body.rank", f"rank {body.rank} is already tier {other.name!r}'s"
            )
        if other.basis != body.basis:
            continue
        lower_but_not_less = other.rank < body.rank and other.threshold >= body.threshold
        higher_but_not_more = other.rank > body.rank and other.threshold <= body.threshold
        if lower_but_not_less or higher_but_not_more:
            raise validation_problem(
                "body.threshold",
                f"thresholds must increase with rank: {other.name!r} (rank {other.rank}) "
                f"has {other.threshold}",
            )


def _tier_out(tier: tiers.Tier) -> TierOut:
    return TierOut(
        name=tier.name,
        rank=tier.rank,
        basis=tier.basis,
        threshold=tier.threshold,
        window_days=tier.window_days,
        earn_multiplier=tier.earn_multiplier,
        discount_percent=tier.discount_percent,
    )


def _definition_out(row: Any) -> StampCardDefinitionOut:
    return StampCardDefinitionOut(
        id=row.id,
        created_at=row.created_at,
        name=row.name,
        skus=row.skus or [],
        categories=row.categories or [],
        stamps_required=row.stamps_required,
        reward_description=row.reward_description,
        voucher_valid_days=row.voucher_valid_days,
        active=row.active,
    )


def routes() -> APIRouter:
    """The routes of this module."""
    router = APIRouter(tags=["loyalty"])

    @router.put("/tiers/{name}")
    async def put_tier(
        name: Annotated[str, StringConstraints(min_length=1, max_length=100)],
        body: TierIn,
        session: Session,
        _: AdminAuth,
        response: Response,
    ) -> TierOut:
        """Define or redefine a tier (invalid ladders: 422 naming the field)."""
        # One ladder edit at a time, so two edits cannot each pass the checks together.
        await session.execute(text(f'LOCK TABLE "{SCHEMA}".tiers IN SHARE ROW EXCLUSIVE MODE'))
        ladder = await tiers.ladder(session)
        _check_ladder(body, [t for t in ladder if t.name != name])
        values = body.model_dump()
        await session.execute(
            insert(tiers_table)
            .values(name=name, created_at=datetime.now(UTC), **values)
            .on_conflict_do_update(index_elements=["name"], set_=values)
        )
        response.status_code = 201 if all(t.name != name for t in ladder) else 200
        return TierOut(name=name, **values)

    @router.get("/tiers")
    async def list_tiers(session: Session, _: ReadAuth) -> list[TierOut]:
        """The tier ladder, lowest rank first."""
        return [_tier_out(tier) for tier in await tiers.ladder(session)]

    @router.get("/members/{customer_id}/tier")
    async def member_tier(customer_id: uuid.UUID, session: Session, _: ReadAuth) -> MemberTierOut:
        """A member's tier, its benefits, the next review and progress towards every tier."""
        row = (
            await session.execute(select(members).where(members.c.customer_id == customer_id))
        ).one_or_none()
        if row is None:
            raise Problem(404, "member-not-found", "Member not found", f"No member {customer_id}.")
        ladder = await tiers.ladder(session)
        measures = await tiers.measures_of(session, customer_id, ladder, datetime.now(UTC))
        multiplier, discount = await tiers.benefits(session, row.tier)
        return MemberTierOut(
            customer_id=customer_id,
            tier=row.tier,
            tier_since=row.tier_since,
            tier_review_at=row.tier_review_at,
            earn_multiplier=multiplier,
            discount_percent=discount,
            progress={t.name: measures[(t.basis, t.window_days)] for t in ladder},
        )

    @router.post("/stamp-cards", status_code=201)
    async def define_stamp_card(
        body: StampCardDefinitionIn, session: Session, _: AdminAuth
    ) -> StampCardDefinitionOut:
        """Define a stamp card ("buy N of these, the next one is free")."""
        row = (
            await session.execute(
                insert(stamp_card_definitions)
                .values(id=uuid.uuid4(), created_at=datetime.now(UTC), **body.model_dump())
                .returning(stamp_card_definitions)
            )
        ).one()
        return _definition_out(row)

    @router.get("/stamp-cards")
    async def list_stamp_cards(session: Session, _: ReadAuth) -> list[StampCardDefinitionOut]:
        """Stamp card definitions, oldest first (inactive ones included)."""
        rows = await session.execute(
            select(stamp_card_definitions).order_by(stamp_card_definitions.c.created_at)
        )
        return [_definition_out(row) for row in rows]

    @router.get("/members/{customer_id}/stamp-cards")
    async def member_stamp_cards(
        customer_id: uuid.UUID, session: Session, _: ReadAuth
    ) -> list[StampCardOut]:
        """A member's stamp cards: open ones first, then completed ones with their vouchers."""
        return [StampCardOut(**card) for card in await stamps.cards_of(session, customer_id)]

    return router
