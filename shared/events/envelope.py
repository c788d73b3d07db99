"""The envelope every event travels in (CloudEvents-style), and the base of typed events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class EventEnvelope(BaseModel):
    """What goes on the wire: metadata plus the typed payload in `data`.

    `id` is the idempotency key consumers deduplicate on; `subject` (the customer id for
    customer events) is the Kafka message key, which keeps one customer's events in order.
    """

    model_config = ConfigDict(frozen=True)

    id: uuid.UUID
    type: str = Field(min_length=1, examples=["purchase.completed"])
    source: str = Field(min_length=1, examples=["loyalty"])
    time: AwareDatetime
    subject: str = Field(min_length=1)
    schema_version: int = Field(default=1, ge=1)
    data: dict[str, Any]


class Event(BaseModel):
    """Base of every typed event: small, frozen, named in the past tense.

    Subclasses set `event_type`, `topic` and `schema_version`, and name the field that
    holds the subject (`subject_field`, the customer id by default).
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_type: ClassVar[str]
    topic: ClassVar[str]
    schema_version: ClassVar[int] = 1
    subject_field: ClassVar[str] = "customer_id"

    def subject(self) -> str:
        """The ordering key: events with one subject are delivered in order."""
        return str(getattr(self, self.subject_field))

    def to_envelope(
        self,
        *,
        source: str,
        event_id: uuid.UUID | None = None,
        time: datetime | None = None,
    ) -> EventEnvelope:
        """Wrap this event for the outbox."""
        return EventEnvelope(
            id=event_id or uuid.uuid4(),
            type=self.event_type,
            source=source,
            time=time or datetime.now(UTC),
            subject=self.subject(),
            schema_version=self.schema_version,
            data=self.model_dump(mode="json"),
        )
