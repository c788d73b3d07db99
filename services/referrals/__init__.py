"""The referrals service: referral codes, attribution, two-sided rewards and abuse guards."""

from pathlib import Path

from services.referrals import qualification
from services.referrals.api import routes
from services.referrals.handlers import handlers
from shared.jobs import ScheduledJob
from shared.service import ServiceDefinition

SERVICE = ServiceDefinition(
    name="referrals",
    routes=routes,
    migrations=Path(__file__).parent / "migrations",
    handler_factory=handlers,
    jobs=(ScheduledJob("expire-referrals", 3600, qualification.expire_overdue),),
)
