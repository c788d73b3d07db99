"""What messaging does with other services' events: filled in by the module's owner."""

from __future__ import annotations

from shared.events.envelope import Event
from shared.pipeline.consumer import Handler
from shared.settings import Settings


def handlers(settings: Settings) -> dict[type[Event], Handler]:
    """The routing table: event model -> handler."""
    return {}
