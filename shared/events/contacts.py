"""Events the contacts service publishes on `crm.contacts`.

Profile events carry a snapshot of the fields other services keep in their projections
(messaging needs the address, locale, time zone and birthday; loyalty resolves cards,
phones and emails at the till), so no service has to call contacts to learn them.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.events.envelope import Event
from shared.events.registry import EVENTS

TOPIC = "crm.contacts"

Channel = Literal["email", "sms", "whatsapp", "line", "push"]
ConsentStatus = Literal["granted", "revoked", "pending"]
SignupSource = Literal["pos", "web", "import", "api"]


class Birthday(BaseModel):
    """Month and day, and the year when the customer gave it."""

    model_config = ConfigDict(frozen=True)

    month: int = Field(ge=1, le=12)
    day: int = Field(ge=1, le=31)
    year: int | None = Field(default=None, ge=1900, le=2100)


class ProfileSnapshot(BaseModel):
    """The profile as it stands after the change (personal data: erased with the customer)."""

    model_config = ConfigDict(frozen=True)

    given_name: str | None = None
    family_name: str | None = None
    email: str | None = None
    phone: str | None = Field(default=None, description="E.164, e.g. +60123456789")
    card_number: str | None = None
    birthday: Birthday | None = None
    locale: str | None = Field(default=None, examples=["ms-MY", "th-TH", "en"])
    time_zone: str | None = Field(default=None, examples=["Asia/Kuala_Lumpur"])
    tags: list[str] = Field(default_factory=list)


@EVENTS.register
class CustomerSignedUp(Event):
    """A new customer joined the business's list (at the till, on the web, by import)."""

    event_type: ClassVar[str] = "customer.signed_up"
    topic: ClassVar[str] = TOPIC

    customer_id: uuid.UUID
    profile: ProfileSnapshot
    source: SignupSource
    store_id: str | None = None
    referral_code: str | None = None
    signed_up_at: datetime


@EVENTS.register
class CustomerUpdated(Event):
    """A profile changed; `changed` names the fields, `profile` is the result."""

    event_type: ClassVar[str] = "customer.updated"
    topic: ClassVar[str] = TOPIC

    customer_id: uuid.UUID
    changed: list[str]
    profile: ProfileSnapshot
    updated_at: datetime


@EVENTS.register
class ConsentChanged(Event):
    """A customer's permission to be contacted on a channel changed."""

    event_type: ClassVar[str] = "consent.changed"
    topic: ClassVar[str] = TOPIC

    customer_id: uuid.UUID
    channel: Channel
    status: ConsentStatus
    source: str
    changed_at: datetime


@EVENTS.register
class ConsentConfirmationRequested(Event):
    """Double opt-in: messaging should send `confirm_url` to the customer on `channel`."""

    event_type: ClassVar[str] = "consent.confirmation_requested"
    topic: ClassVar[str] = TOPIC

    customer_id: uuid.UUID
    channel: Channel
    address: str = Field(description="The email address or phone number to confirm.")
    locale: str | None = None
    confirmation_token: str
    confirm_url: str | None = None
    requested_at: datetime


@EVENTS.register
class CustomerMerged(Event):
    """A duplicate profile was folded into a survivor; other services move its history."""

    event_type: ClassVar[str] = "customer.merged"
    topic: ClassVar[str] = TOPIC
    subject_field: ClassVar[str] = "survivor_id"

    survivor_id: uuid.UUID
    merged_id: uuid.UUID
    profile: ProfileSnapshot
    merged_at: datetime


@EVENTS.register
class CustomerErased(Event):
    """A customer's personal data was erased (GDPR); only the anonymous id remains."""

    event_type: ClassVar[str] = "customer.erased"
    topic: ClassVar[str] = TOPIC

    customer_id: uuid.UUID
    erased_at: datetime
