"""Events the scoring service publishes on `crm.scoring`.

Messaging targets offers with them (win-back when a good customer's churn band rises,
segment journeys); they are sent only on material changes, not on every purchase.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import ClassVar

from pydantic import Field

from shared.events.envelope import Event
from shared.events.registry import EVENTS

TOPIC = "crm.scoring"


@EVENTS.register
class CustomerScored(Event):
    """A customer's churn band, RFM segment or CLV changed materially."""

    event_type: ClassVar[str] = "customer.scored"
    topic: ClassVar[str] = TOPIC

    customer_id: uuid.UUID
    churn_risk: float = Field(ge=0, le=1, description="1 - P(alive) under the BG/NBD fit.")
    churn_band: str = Field(examples=["low", "medium", "high"])
    previous_churn_band: str | None = None
    clv: float = Field(description="Discounted CLV over the horizon, major currency units.")
    expected_purchases: float = Field(ge=0, description="Expected purchases in the horizon.")
    rfm_segment: str | None = Field(default=None, examples=["Champions", "At risk"])
    previous_rfm_segment: str | None = None
    fit_id: int | None = None
    scored_at: datetime


@EVENTS.register
class SegmentEntered(Event):
    """A customer now matches a saved segment's rule."""

    event_type: ClassVar[str] = "segment.entered"
    topic: ClassVar[str] = TOPIC

    customer_id: uuid.UUID
    segment_id: uuid.UUID
    segment_name: str
    entered_at: datetime


@EVENTS.register
class SegmentExited(Event):
    """A customer no longer matches a saved segment's rule."""

    event_type: ClassVar[str] = "segment.exited"
    topic: ClassVar[str] = TOPIC

    customer_id: uuid.UUID
    segment_id: uuid.UUID
    segment_name: str
    exited_at: datetime
