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
