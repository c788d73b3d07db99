"""Scheduled job: expire reservations that were neither confirmed nor released in time.

Register as `ScheduledJob("release-expired-reservations", 60, release_expired_reservations)`
in the loyalty `ServiceDefinition.jobs`. Each reservation is expired in a transaction of
its own (member lock, points and stock back, event in the outbox), so one bad row does not
hold back the rest and a crash leaves nothing half done: the next run starts again from
the database's state.
"""

from __future__ import annotations

from datetime import UTC, datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.loyalty import rewards
from shared.jobs import ScheduledJob
from shared.settings import Settings

log = structlog.get_logger(__name__)

BATCH = 500
INTERVAL_SECONDS = 60.0


async def release_expired_reservations(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> int:
    """Expire every reservation past its `reserved_until`; the number expired."""
    del settings  # nothing to configure: the timeout is `rewards.RESERVATION_TIMEOUT`
    handled = 0
    while True:
        now = datetime.now(UTC)
        async with sessions() as session:
            overdue = await rewards.overdue_reservations(session, now, BATCH)
        expired_now = 0
        for redemption_id in overdue:
            try:
                async with sessions() as session, session.begin():
                    # `release` re-checks the status under the member's lock: a till that
                    # confirmed or released it meanwhile wins.
                    done = await rewards.release(session, redemption_id, now=now, expired=True)
            except rewards.RedemptionRefused as exc:
                log.info(
                    "loyalty.redemption.not_expired",
                    redemption_id=str(redemption_id),
                    reason=exc.detail,
                )
                continue
            if done.status == "expired" and done.settled_at == now:
                expired_now += 1
                log.info("loyalty.redemption.expired", redemption_id=str(redemption_id))
        handled += expired_now
        if len(overdue) < BATCH or expired_now == 0:
            return handled


JOB = ScheduledJob(
    name="release-expired-reservations",
    interval_seconds=INTERVAL_SECONDS,
    run=release_expired_reservations,
)
