"""Request and response bodies of the loyalty API."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from services.loyalty.earning import EarningRules

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CustomerRef(Strict):
    """Exactly one way to name the customer at the till."""

    id: uuid.UUID | None = None
    card_number: str | None = Field(default=None, max_length=32)
    phone: str | None = Field(default=None, max_length=32)
    email: str | None = Field(default=None, max_length=254)

    @model_validator(mode="after")
    def _exactly_one(self) -> CustomerRef:
        given = [v for v in (self.id, self.card_number, self.phone, self.email) if v is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of id, card_number, phone or email")
        return self


class LineIn(Strict):
    sku: Text
    category: Text | None = None
    quantity: int = Field(ge=1, le=100_000)
    unit_price_minor: int = Field(ge=0, le=10**12)


class PurchaseIn(Strict):
    """A completed sale, as the till reports it. Amounts are integer minor units."""

    customer: CustomerRef
    order_id: Text
    store_id: str | None = Field(default=None, max_length=64)
    currency: str = Field(pattern="^[A-Z]{3}$", examples=["MYR"])
    total_minor: int = Field(ge=0, le=10**12, examples=[1250])
    lines: list[LineIn] = Field(default_factory=list, max_length=500)
    purchased_at: AwareDatetime | None = None
    channel: Text = "pos"


class PurchaseOut(BaseModel):
    """What the receipt prints: the points this purchase earned, and the new balances."""

    purchase_id: uuid.UUID
    customer_id: uuid.UUID
    points: int
    balance: int
    available: int
    pending: int
    repeated: bool = Field(description="True when this order was already recorded.")


class RefundIn(Strict):
    amount_minor: int = Field(gt=0, le=10**12)
    refund_id: uuid.UUID | None = Field(default=None, description="Makes retries safe.")
    refunded_at: AwareDatetime | None = None


class RefundOut(BaseModel):
    refund_id: uuid.UUID
    purchase_id: uuid.UUID
    points_reversed: int
    balance: int


class ExpiringPoints(BaseModel):
    points: int
    expires_at: datetime


class StampCardSummary(BaseModel):
    """A member's progress on one stamp card."""

    id: uuid.UUID
    definition_id: uuid.UUID
    name: str
    stamps: int
    stamps_required: int
    reward_description: str
    completed_at: datetime | None
    voucher_code: str | None


class AffordableReward(BaseModel):
    """A reward the member can redeem now."""

    id: uuid.UUID
    name: str
    points_cost: int


class MemberOut(BaseModel):
    """Everything the till shows about a member, in one call."""

    customer_id: uuid.UUID
    status: str
    tier: str | None
    earn_multiplier: Decimal
    privilege_discount_percent: Decimal
    balance: int
    available: int
    pending: int
    debt: int
    expiring_soon: list[ExpiringPoints]
    stamp_cards: list[StampCardSummary]
    affordable_rewards: list[AffordableReward]


class AdjustmentIn(Strict):
    points: int = Field(description="Signed; not zero.")
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=500)]

    @model_validator(mode="after")
    def _not_zero(self) -> AdjustmentIn:
        if self.points == 0:
            raise ValueError("an adjustment of zero points changes nothing")
        return self


class LedgerEntryOut(BaseModel):
    id: int
    kind: str
    points: int
    reference: str | None
    reason: str | None
    actor: str | None
    created_at: datetime


class RulesIn(Strict):
    """A new version of the earning rules, in force from `effective_from` (default now)."""

    effective_from: AwareDatetime | None = None
    rules: EarningRules


class RulesOut(BaseModel):
    version: int | None
    effective_from: datetime | None
    rules: EarningRules
