"""Event contract: the envelope, the typed models per producing domain, and their registry.

Importing this package registers every product event type in `EVENTS`.
"""

from shared.events import (
    contacts,
    loyalty,
    messaging,
    platform,
    purchases,
    referrals,
    scoring,
)
from shared.events.envelope import Event, EventEnvelope
from shared.events.registry import EVENTS, EventRegistry, UnknownEventVersion

__all__ = [
    "EVENTS",
    "Event",
    "EventEnvelope",
    "EventRegistry",
    "UnknownEventVersion",
    "contacts",
    "loyalty",
    "messaging",
    "platform",
    "purchases",
    "referrals",
    "scoring",
]
