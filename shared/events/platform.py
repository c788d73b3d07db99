"""Events the platform itself publishes."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from shared.events.envelope import Event
from shared.events.registry import EVENTS

DEAD_LETTER_TOPIC = "crm.dead-letters"


@EVENTS.register
class EventDeadLettered(Event):
    """A message a consumer could not apply: unparseable, or failing after bounded retries.

    The original bytes are kept (as text when they are UTF-8, else base64) so that the
    message can be inspected and re-published once the cause is fixed.
    """

    event_type: ClassVar[str] = "event.dead_lettered"
    topic: ClassVar[str] = DEAD_LETTER_TOPIC
    subject_field: ClassVar[str] = "original_key"

    consumer_group: str
    original_topic: str
    original_partition: int
    original_offset: int
    original_key: str = Field(description="The original message key, or '-' when it had none.")
    original_event_id: str | None = None
    original_type: str | None = None
    reason: str
    attempts: int = Field(ge=0)
    payload: str
    payload_encoding: str = Field(pattern="^(utf-8|base64)$")
