"""Events the messaging service publishes on `crm.messaging`.

Scoring and loyalty may use survey answers; reporting follows sends, deliveries,
engagement and campaign completion. Every message event names the send-ledger entry
(`send_id`), so a consumer can tie engagement back to a campaign or trigger.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import ClassVar

from pydantic import Field

from shared.events.envelope import Event
from shared.events.registry import EVENTS

TOPIC = "crm.messaging"


class _MessageEvent(Event):
    topic: ClassVar[str] = TOPIC

    send_id: uuid.UUID
    customer_id: uuid.UUID
    channel: str = Field(examples=["email", "sms", "whatsapp", "line", "webhook"])
    source: str = Field(
        description="`campaign:<id>` or `trigger:<name>`", examples=["trigger:birthday"]
    )


@EVENTS.register
class MessageSent(_MessageEvent):
    """The provider accepted the message."""

    event_type: ClassVar[str] = "message.sent"

    provider_message_id: str | None = None
    variant: str | None = None
    sent_at: datetime


@EVENTS.register
class MessageDelivered(_MessageEvent):
    """The provider reported delivery."""

    event_type: ClassVar[str] = "message.delivered"

    delivered_at: datetime


@EVENTS.register
class MessageFailed(_MessageEvent):
    """The message will not be delivered (bounce, invalid address, or retries exhausted)."""

    event_type: ClassVar[str] = "message.failed"

    reason: str
    permanent: bool
    failed_at: datetime


@EVENTS.register
class MessageOpened(_MessageEvent):
    """The recipient opened the message (where the channel tells)."""

    event_type: ClassVar[str] = "message.opened"

    opened_at: datetime


@EVENTS.register
class MessageClicked(_MessageEvent):
    """The recipient followed a link in the message."""

    event_type: ClassVar[str] = "message.clicked"

    url: str
    clicked_at: datetime


@EVENTS.register
class SurveyAnswered(Event):
    """A customer answered a survey (NPS 0-10, or a short relationship survey)."""

    event_type: ClassVar[str] = "survey.answered"
    topic: ClassVar[str] = TOPIC

    survey_id: uuid.UUID
    customer_id: uuid.UUID
    kind: str = Field(examples=["nps", "relationship"])
    score: int | None = Field(default=None, ge=0, le=10)
    answers: dict[str, str] = Field(default_factory=dict)
    answered_at: datetime


@EVENTS.register
class CampaignCompleted(Event):
    """Every eligible recipient of a campaign was sent to, skipped with a reason, or failed."""

    event_type: ClassVar[str] = "campaign.completed"
    topic: ClassVar[str] = TOPIC
    subject_field: ClassVar[str] = "campaign_id"

    campaign_id: uuid.UUID
    sent: int
    skipped: int
    failed: int
    completed_at: datetime
