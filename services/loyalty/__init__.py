"""The loyalty service: purchases, the points ledger, tiers, rewards at the till and stamp cards."""

from pathlib import Path

from services.loyalty.api import routes
from services.loyalty.handlers import handlers
from shared.service import ServiceDefinition

SERVICE = ServiceDefinition(
    name="loyalty",
    routes=routes,
    migrations=Path(__file__).parent / "migrations",
    handler_factory=handlers,
)
