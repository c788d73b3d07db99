"""Events the loyalty service publishes on `crm.loyalty`."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import ClassVar

from pydantic import Field

from shared.events.envelope import Event
from shared.events.registry import EVENTS

TOPIC = "crm.loyalty"


@EVENTS.register
class PointsEarned(Event):
    """A purchase (or a bonus) credited points; `available_at` ends the return window."""

    event_type: ClassVar[str] = "points.earned"
    topic: ClassVar[str] = TOPIC

    customer_id: uuid.UUID
    points: int = Field(ge=0)
    reason: str = Field(examples=["purchase", "bonus"])
    purchase_id: uuid.UUID | None = None
    available_at: datetime
    expires_at: datetime | None = None
    balance: int = Field(description="The member's balance after this entry.")
    earned_at: datetime


@EVENTS.register
class PointsAdjusted(Event):
    """Points were added or taken by an admin, or taken back for a refund."""

    event_type: ClassVar[str] = "points.adjusted"
    topic: ClassVar[str] = TOPIC

    customer_id: uuid.UUID
    points: int = Field(description="Signed: negative takes points away.")
    reason: str
    balance: int
    adjusted_at: datetime


@EVENTS.register
class PointsRedeemed(Event):
    """Points were reserved for a reward or as payment (`status` says where it stands)."""

    event_type: ClassVar[str] = "points.redeemed"
    topic: ClassVar[str] = TOPIC

    customer_id: uuid.UUID
    redemption_id: uuid.UUID
    points: int = Field(ge=0)
    status: str = Field(examples=["reserved", "confirmed", "released"])
    reward_id: uuid.UUID | None = None
    voucher_code: str | None = None
    balance: int
    redeemed_at: datetime


@EVENTS.register
class PointsExpiring(Event):
    """Ahead of time: `points` will expire at `expires_at` unless spent (for reminders)."""

    event_type: ClassVar[str] = "points.expiring"
    topic: ClassVar[str] = TOPIC

    customer_id: uuid.UUID
    points: int = Field(gt=0)
    expires_at: datetime


@EVENTS.register
class PointsExpired(Event):
    """Points reached their expiry and left the balance."""

    event_type: ClassVar[str] = "points.expired"
    topic: ClassVar[str] = TOPIC

    customer_id: uuid.UUID
    points: int = Field(gt=0)
    balance: int
    expired_at: datetime


@EVENTS.register
class TierChanged(Event):
    """A member moved up (at once) or down (at the end of a review period)."""

    event_type: ClassVar[str] = "tier.changed"
    topic: ClassVar[str] = TOPIC

    customer_id: uuid.UUID
    previous_tier: str | None
    tier: str | None
    direction: str = Field(examples=["up", "down"])
    changed_at: datetime


@EVENTS.register
class RewardIssued(Event):
    """A voucher was issued to a member (a redeemed reward or a completed stamp card)."""

    event_type: ClassVar[str] = "reward.issued"
    topic: ClassVar[str] = TOPIC

    customer_id: uuid.UUID
    voucher_code: str
    reward_id: uuid.UUID | None = None
    description: str
    valid_until: datetime | None = None
    issued_at: datetime


@EVENTS.register
class StampCardCompleted(Event):
    """A member filled a stamp card ("buy N, the next one is free")."""

    event_type: ClassVar[str] = "stamp_card.completed"
    topic: ClassVar[str] = TOPIC

    customer_id: uuid.UUID
    card_id: uuid.UUID
    definition_id: uuid.UUID
    voucher_code: str
    completed_at: datetime
