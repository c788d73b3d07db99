"""The loyalty service: purchases, the points ledger, tiers, rewards at the till and stamp cards."""

from pathlib import Path

from services.loyalty import expiry, tiers
from services.loyalty.api import routes
from services.loyalty.handlers import handlers
from services.loyalty.redemption_jobs import JOB as RELEASE_EXPIRED_RESERVATIONS
from shared.jobs import ScheduledJob
from shared.service import ServiceDefinition

SERVICE = ServiceDefinition(
    name="loyalty",
    routes=routes,
    migrations=Path(__file__).parent / "migrations",
    handler_factory=handlers,
    jobs=(
        RELEASE_EXPIRED_RESERVATIONS,
        ScheduledJob("expire-points", 3600, expiry.expire_due_points),
        ScheduledJob("warn-expiring-points", 3600, expiry.warn_expiring_points),
        ScheduledJob("review-tiers", 3600, tiers.review_tiers),
    ),
)
