"""The one place that knows every service."""

from __future__ import annotations

from services.contacts import SERVICE as CONTACTS
from services.loyalty import SERVICE as LOYALTY
from services.messaging import SERVICE as MESSAGING
from services.referrals import SERVICE as REFERRALS
from services.scoring import SERVICE as SCORING
from shared.service import ServiceDefinition

ALL_SERVICES: tuple[ServiceDefinition, ...] = (CONTACTS, LOYALTY, REFERRALS, SCORING, MESSAGING)


def by_name(name: str) -> ServiceDefinition:
    """The service called `name`; a clear error for a typo."""
    for service in ALL_SERVICES:
        if service.name == name:
            return service
    known = ", ".join(s.name for s in ALL_SERVICES)
    raise KeyError(f"no service called {name!r}; known: {known}")
