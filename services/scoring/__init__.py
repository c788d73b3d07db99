"""The scoring service: rFM, churn risk, customer lifetime value and segments."""

from pathlib import Path

from services.scoring.api import routes
from shared.service import ServiceDefinition

SERVICE = ServiceDefinition(
    name="scoring",
    routes=routes,
    migrations=Path(__file__).parent / "migrations",
)
