"""Events the referrals service publishes on `crm.referrals`.

Loyalty turns `referral.rewarded` into bonus entries and `referral.reversed` into their
reversal; messaging and reporting listen to the rest.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from shared.events.envelope import Event
from shared.events.registry import EVENTS

TOPIC = "crm.referrals"


@EVENTS.register
class ReferralQualified(Event):
    """The referee's first purchase met the programme's minimum in time."""

    event_type: ClassVar[str] = "referral.qualified"
    topic: ClassVar[str] = TOPIC
    subject_field: ClassVar[str] = "referee_id"

    referral_id: uuid.UUID
    referrer_id: uuid.UUID
    referee_id: uuid.UUID
    purchase_id: uuid.UUID
    qualified_at: datetime


@EVENTS.register
class ReferralRewarded(Event):
    """Points for one side of a qualified referral; `reward_id` makes the award idempotent."""

    event_type: ClassVar[str] = "referral.rewarded"
    topic: ClassVar[str] = TOPIC

    reward_id: uuid.UUID
    referral_id: uuid.UUID
    customer_id: uuid.UUID
    role: Literal["referrer", "referee"]
    points: int = Field(gt=0)
    rewarded_at: datetime


@EVENTS.register
class ReferralReversed(Event):
    """A referral's rewards are taken back (the qualifying purchase was refunded)."""

    event_type: ClassVar[str] = "referral.reversed"
    topic: ClassVar[str] = TOPIC

    reward_id: uuid.UUID
    referral_id: uuid.UUID
    customer_id: uuid.UUID
    points: int = Field(gt=0)
    reason: str
    reversed_at: datetime
