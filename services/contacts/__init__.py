"""The contacts service: customer profiles, signups, consent, import, merge and GDPR requests."""

from pathlib import Path

from services.contacts.api import routes
from shared.service import ServiceDefinition

SERVICE = ServiceDefinition(
    name="contacts",
    routes=routes,
    migrations=Path(__file__).parent / "migrations",
)
