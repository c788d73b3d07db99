"""Purchase events on `crm.purchases`.

Loyalty publishes them for purchases that came over HTTP; outside systems may publish the
same types onto the topic themselves, and consumers treat both alike.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from shared.events.envelope import Event
from shared.events.registry import EVENTS

TOPIC = "crm.purchases"


class PurchaseLine(BaseModel):
    """One line of a receipt."""

    model_config = ConfigDict(frozen=True)

    sku: str
    category: str | None = None
    quantity: int = Field(ge=1)
    unit_price_minor: int = Field(ge=0)


@EVENTS.register
class PurchaseCompleted(Event):
    """A customer paid for an order; amounts are integer minor units of `currency`."""

    event_type: ClassVar[str] = "purchase.completed"
    topic: ClassVar[str] = TOPIC

    purchase_id: uuid.UUID
    customer_id: uuid.UUID
    store_id: str | None = None
    order_id: str
    currency: str = Field(pattern="^[A-Z]{3}$")
    total_minor: int = Field(ge=0)
    lines: list[PurchaseLine] = Field(default_factory=list)
    channel: str = "pos"
    purchased_at: datetime


@EVENTS.register
class PurchaseRefunded(Event):
    """Part or all of a purchase was given back."""

    event_type: ClassVar[str] = "purchase.refunded"
    topic: ClassVar[str] = TOPIC

    refund_id: uuid.UUID
    purchase_id: uuid.UUID
    customer_id: uuid.UUID
    currency: str = Field(pattern="^[A-Z]{3}$")
    amount_minor: int = Field(ge=0)
    refunded_at: datetime
