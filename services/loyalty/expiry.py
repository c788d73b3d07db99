"""Points expiry: lots expire `expires_at`; reminders go out ahead of time.

* `expiry_for` computes a lot's expiry: a number of months after it was earned, or the
  end of that month in the business time zone (`at_period_end`).
* `expire_due_points` (scheduled job) takes every lot with `expires_at <= now` and
  points remaining out of the balance through the ledger (`kind="expire"`, reference
  `expire:{lot_id}`), and publishes one `points.expired` per member.
* `warn_expiring_points` (scheduled job) publishes one `points.expiring` per member for
  lots expiring within `NOTICE_WINDOW` that were not announced yet, and records them in
  `expiry_notices` so that each lot is announced once.

Both work from the database's state, one member per transaction, so a crash or a second
run repeats nothing.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.loyalty import ledger
from services.loyalty.dates import add_months
from services.loyalty.models import SCHEMA, expiry_notices, lots, members
from services.loyalty.models import ledger as ledger_table
from shared.events.loyalty import PointsExpired, PointsExpiring
from shared.pipeline.outbox import add_event
from shared.settings import Settings

SOURCE = "loyalty"
NOTICE_WINDOW = timedelta(days=14)
BUSINESS_TIME_ZONE = "Asia/Kuala_Lumpur"
BATCH = 500


def expiry_for(
    earned_at: datetime,
    months: int,
    at_period_end: bool = False,
    time_zone: str = BUSINESS_TIME_ZONE,
) -> datetime | None:
    """When points earned at `earned_at` expire; None when `months` is 0 (never).

    `at_period_end`: at the end of the month the plain expiry falls in, i.e. at local
    midnight starting the next month in `time_zone` (returned in UTC), so that all of a
    month's points expire together and one reminder covers them.
    """
    if months <= 0:
        return None
    plain = add_months(earned_at, months)
    if not at_period_end:
        return plain
    local = plain.astimezone(ZoneInfo(time_zone))
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    start_of_next = datetime(year, month, 1, tzinfo=ZoneInfo(time_zone))
    return start_of_next.astimezone(UTC)


async def _members_with(
    sessions: async_sessionmaker[AsyncSession],
    condition: ColumnElement[bool],
    after: uuid.UUID | None,
) -> list[uuid.UUID]:
    statement = select(lots.c.customer_id).where(condition).distinct()
    if after is not None:
        statement = statement.where(lots.c.customer_id > after)
    async with sessions() as session:
        rows = await session.execute(statement.order_by(lots.c.customer_id).limit(BATCH))
        return list(rows.scalars())


async def _expire_reference(session: AsyncSession, lot_id: int) -> str:
    # A lot normally expires once; if a released reservation puts points back into an
    # expired lot, they expire again under a new reference (`expire:{lot}:{n}`).
    base = f"expire:{lot_id}"
    earlier = (
        await session.execute(
            select(func.count()).where(
                ledger_table.c.kind == "expire",
                or_(ledger_table.c.reference == base, ledger_table.c.reference.like(f"{base}:%")),
            )
        )
    ).scalar_one()
    return base if earlier == 0 else f"{base}:{earlier}"


async def expire_member(session: AsyncSession, customer_id: uuid.UUID, now: datetime) -> int:
    """Expire the member's due lots; the number of lots expired."""
    await ledger.lock_member(session, customer_id, now)
    due = (
        await session.execute(
            select(lots.c.id, lots.c.remaining)
            .where(
                lots.c.customer_id == customer_id,
                lots.c.remaining > 0,
                lots.c.expires_at <= now,
            )
            .order_by(lots.c.id)
            .with_for_update()
        )
    ).all()
    expired_points = 0
    expired_lots = 0
    for lot_id, remaining in due:
        entry = await ledger.debit(
            session,
            customer_id,
            kind="expire",
            points=int(remaining),
            reference=await _expire_reference(session, int(lot_id)),
            now=now,
            available_only=False,
            allow_debt=False,
            first_lots=[int(lot_id)],
            reason="points expired",
        )
        if entry is not None:
            expired_points += int(remaining)
            expired_lots += 1
    if expired_points:
        balance = (
            await session.execute(
                select(members.c.balance).where(members.c.customer_id == customer_id)
            )
        ).scalar_one()
        await add_event(
            session,
            SCHEMA,
            PointsExpired(
                customer_id=customer_id,
                points=expired_points,
                balance=int(balance),
                expired_at=now,
            ),
            source=SOURCE,
        )
    return expired_lots


async def expire_points(sessions: async_sessionmaker[AsyncSession], now: datetime) -> int:
    """Expire every lot due at `now`, one member per transaction; the lots expired."""
    condition = (lots.c.remaining > 0) & (lots.c.expires_at <= now)
    handled = 0
    after: uuid.UUID | None = None
    while due := await _members_with(sessions, condition, after):
        for customer_id in due:
            async with sessions() as session, session.begin():
                handled += await expire_member(session, customer_id, now)
        after = due[-1]
    return handled


async def warn_member(
    session: AsyncSession, customer_id: uuid.UUID, now: datetime, within: timedelta
) -> int:
    """Announce the member's lots expiring in (now, now + within] not announced yet."""
    candidates = (
        await session.execute(
            select(lots.c.id, lots.c.remaining, lots.c.expires_at)
            .where(
                lots.c.customer_id == customer_id,
                lots.c.remaining > 0,
                lots.c.expires_at > now,
                lots.c.expires_at <= now + within,
            )
            .order_by(lots.c.expires_at)
        )
    ).all()
    if not candidates:
        return 0
    recorded = set(
        (
            await session.execute(
                insert(expiry_notices)
                .values([{"lot_id": lot_id, "notified_at": now} for lot_id, _, _ in candidates])
                .on_conflict_do_nothing()
                .returning(expiry_notices.c.lot_id)
            )
        ).scalars()
    )
    fresh = [
        (remaining, expires) for lot_id, remaining, expires in candidates if lot_id in recorded
    ]
    if not fresh:
        return 0
    # One reminder per member: the points newly announced, from the earliest expiry.
    await add_event(
        session,
        SCHEMA,
        PointsExpiring(
            customer_id=customer_id,
            points=sum(int(remaining) for remaining, _ in fresh),
            expires_at=min(expires for _, expires in fresh),
        ),
        source=SOURCE,
    )
    return len(fresh)


async def warn_expiring(
    sessions: async_sessionmaker[AsyncSession],
    now: datetime,
    within: timedelta = NOTICE_WINDOW,
) -> int:
    """Publish `points.expiring` for lots newly inside the notice window; lots announced."""
    announced = select(expiry_notices.c.lot_id).where(expiry_notices.c.lot_id == lots.c.id)
    condition = (
        (lots.c.remaining > 0)
        & (lots.c.expires_at > now)
        & (lots.c.expires_at <= now + within)
        & ~announced.exists()
    )
    handled = 0
    after: uuid.UUID | None = None
    while due := await _members_with(sessions, condition, after):
        for customer_id in due:
            async with sessions() as session, session.begin():
                handled += await warn_member(session, customer_id, now, within)
        after = due[-1]
    return handled


async def expire_due_points(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> int:
    """Scheduled job (`shared.jobs.JobFunction`): expire the lots due now."""
    del settings
    return await expire_points(sessions, datetime.now(UTC))


async def warn_expiring_points(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> int:
    """Scheduled job (`shared.jobs.JobFunction`): reminders for points expiring soon."""
    del settings
    return await warn_expiring(sessions, datetime.now(UTC))
