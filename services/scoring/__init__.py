"""The scoring service: RFM, churn risk, customer lifetime value and segments."""

from pathlib import Path

from services.scoring import refit
from services.scoring.api import routes
from services.scoring.handlers import handlers
from shared.service import ServiceDefinition

SERVICE = ServiceDefinition(
    name="scoring",
    routes=routes,
    migrations=Path(__file__).parent / "migrations",
    handler_factory=handlers,
    jobs=(refit.JOB,),
)
