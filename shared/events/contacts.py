"""Events the contacts service publishes on `crm.contacts`.

Issue-by-issue the contacts service adds types here; a published type never changes shape
within a schema version.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from shared.events.envelope import Event
from shared.events.registry import EVENTS

TOPIC = "crm.contacts"


@EVENTS.register
class CustomerSignedUp(Event):
    """A new customer joined the business's list (at the till, on the web, by import)."""

    event_type: ClassVar[str] = "customer.signed_up"
    topic: ClassVar[str] = TOPIC

    customer_id: uuid.UUID
    email: str | None = None
    phone: str | None = Field(default=None, description="E.164")
    card_number: str | None = None
    locale: str | None = None
    time_zone: str | None = None
    source: Literal["pos", "web", "import", "api"] = "api"
    store_id: str | None = None
    referral_code: str | None = None
    signed_up_at: datetime


@EVENTS.register
class CustomerMerged(Event):
    """A duplicate profile was folded into a survivor; other services move its history."""

    event_type: ClassVar[str] = "customer.merged"
    topic: ClassVar[str] = TOPIC
    subject_field: ClassVar[str] = "survivor_id"

    survivor_id: uuid.UUID
    merged_id: uuid.UUID


@EVENTS.register
class CustomerErased(Event):
    """A customer's personal data was erased (GDPR); only the anonymous id remains."""

    event_type: ClassVar[str] = "customer.erased"
    topic: ClassVar[str] = TOPIC

    customer_id: uuid.UUID
