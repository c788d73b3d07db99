"""The messaging service: segment-targeted offers, triggers, A/B tests and contact policy."""

from pathlib import Path

from services.messaging import birthdays, campaign_outcomes, dispatcher
from services.messaging.api import routes
from services.messaging.handlers import handlers
from shared.service import ServiceDefinition

SERVICE = ServiceDefinition(
    name="messaging",
    routes=routes,
    migrations=Path(__file__).parent / "migrations",
    handler_factory=handlers,
    jobs=(campaign_outcomes.JOB, birthdays.JOB, dispatcher.JOB),
)
