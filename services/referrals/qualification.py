"""Deciding a pending referral from the referee's first purchase, and rewarding both sides.

`evaluate` is the one place a referral leaves `pending`: on a purchase, after a merge,
after a reviewer approves a flagged referral, and from the hourly expiry job. It works
from stored state only, under a row lock on the referral, so calling it again (or
concurrently) changes nothing once the referral is decided.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import structlog
from sqlalchemy import Row, exists, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.referrals import programmes, projection, reversal, rules
from services.referrals.models import SCHEMA, customers, purchases, referrals, rewards
from services.referrals.models import programmes as programmes_table
from shared.events.referrals import ReferralQualified, ReferralRewarded
from shared.pipeline.outbox import add_event
from shared.settings import Settings

log = structlog.get_logger(__name__)

SOURCE = "referrals"
NO_PROGRAMME = "no programme in force"
Role = Literal["referrer", "referee"]


async def lock_referral(session: AsyncSession, referral_id: uuid.UUID) -> Row[Any] | None:
    """The referral's row, locked until the transaction ends."""
    return (
        await session.execute(
            select(referrals).where(referrals.c.id == referral_id).with_for_update()
        )
    ).one_or_none()


async def pending_of_referee(session: AsyncSession, referee_id: uuid.UUID) -> uuid.UUID | None:
    """The referral waiting for this referee's purchase, if any."""
    found = (
        await session.execute(
            select(referrals.c.id).where(
                referrals.c.referee_id == referee_id, referrals.c.status == "pending"
            )
        )
    ).scalar_one_or_none()
    return None if found is None else uuid.UUID(str(found))


async def evaluate(
    session: AsyncSession, referral_id: uuid.UUID, *, now: datetime, settings: Settings
) -> None:
    """(Re)evaluate a `pending` referral from the stored purchases; others are left alone."""
    referral = await lock_referral(session, referral_id)
    if referral is None or referral.status != "pending":
        return
    signed_up = await projection.signed_up_at(session, referral.referee_id)
    start = signed_up or referral.attributed_at
    # Purchases from before the signup (an approved `bought_before` referral) do not count.
    first = await projection.first_purchase(session, referral.referee_id, since=start)
    if referral.programme_version is None:
        if first is not None:
            await _qualify(session, referral, first, now=now, points=(0, 0), note=NO_PROGRAMME)
        return
    programme = await programmes.programme_version(session, referral.programme_version)
    if first is None:
        if now > start + timedelta(days=programme.qualify_within_days):
            await _close(session, referral_id, "expired", now=now, purchase_id=None)
        return
    outcome = rules.qualification(
        start, first.purchased_at, first.total_minor, first.currency, programme
    )
    if outcome != "qualified":
        await _close(session, referral_id, outcome, now=now, purchase_id=first.purchase_id)
        return
    referrer_points, referee_points = rules.reward_points(
        programme, await projection.tier_of(session, referral.referrer_id)
    )
    note = None
    if referrer_points > 0:
        rewarded = await _referrer_rewards_in_month(session, referral.referrer_id, now, settings)
        if not rules.within_cap(rewarded, programme.monthly_cap):
            note = f"monthly cap of {programme.monthly_cap} referrer rewards reached"
            referrer_points = 0
    await _qualify(
        session, referral, first, now=now, points=(referrer_points, referee_points), note=note
    )
    # A refund stored before the referral was decided (say, while it waited for review)
    # may already cancel what was just awarded.
    await reversal.check(session, first.purchase_id, now=now, settings=settings)


async def _close(
    session: AsyncSession,
    referral_id: uuid.UUID,
    status: str,
    *,
    now: datetime,
    purchase_id: uuid.UUID | None,
) -> None:
    await session.execute(
        update(referrals)
        .where(referrals.c.id == referral_id)
        .values(status=status, closed_at=now, purchase_id=purchase_id)
    )
    log.info("referrals.referral.closed", referral_id=str(referral_id), status=status)


async def _referrer_rewards_in_month(
    session: AsyncSession, referrer_id: uuid.UUID, moment: datetime, settings: Settings
) -> int:
    """Referrer rewards in `moment`'s calendar month, counted under a lock on the referrer.

    The advisory lock serialises two referrals of the same referrer qualifying at once,
    so the cap cannot be overrun by a race.
    """
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:name, 0))"),
        {"name": f"referrals.cap.{referrer_id}"},
    )
    start, end = rules.month_bounds(moment, settings.referrals_time_zone)
    count = (
        await session.execute(
            select(func.count()).where(
                rewards.c.customer_id == referrer_id,
                rewards.c.role == "referrer",
                rewards.c.status == "rewarded",
                rewards.c.rewarded_at >= start,
                rewards.c.rewarded_at < end,
            )
        )
    ).scalar_one()
    return int(count)


def _joined(existing: Any, addition: str) -> Any:
    """`existing; addition`, or `addition` alone when there is no note yet."""
    return func.coalesce(existing + "; " + addition, addition)


async def _qualify(
    session: AsyncSession,
    referral: Row[Any],
    purchase: projection.Purchase,
    *,
    now: datetime,
    points: tuple[int, int],
    note: str | None,
) -> None:
    referral_id: uuid.UUID = referral.id
    referrer_id: uuid.UUID = referral.referrer_id
    referee_id: uuid.UUID = referral.referee_id
    await session.execute(
        update(referrals)
        .where(referrals.c.id == referral_id)
        .values(
            status="qualified",
            purchase_id=purchase.purchase_id,
            qualified_at=now,
            # A reviewer's note stays; ours is added to it.
            note=referrals.c.note if note is None else _joined(referrals.c.note, note),
        )
    )
    await add_event(
        session,
        SCHEMA,
        ReferralQualified(
            referral_id=referral_id,
            referrer_id=referrer_id,
            referee_id=referee_id,
            purchase_id=purchase.purchase_id,
            qualified_at=now,
        ),
        source=SOURCE,
    )
    referrer_points, referee_points = points
    sides: tuple[tuple[Role, uuid.UUID, int], ...] = (
        ("referrer", referrer_id, referrer_points),
        ("referee", referee_id, referee_points),
    )
    for role, customer_id, amount in sides:
        if amount > 0:
            await _reward(session, referral_id, customer_id, role, amount, now)
    log.info(
        "referrals.referral.qualified",
        referral_id=str(referral_id),
        referrer_points=referrer_points,
        referee_points=referee_points,
    )


async def _reward(
    session: AsyncSession,
    referral_id: uuid.UUID,
    customer_id: uuid.UUID,
    role: Role,
    points: int,
    now: datetime,
) -> None:
    """One side's reward, once: unique (referral_id, role) absorbs a repeat."""
    reward_id = (
        await session.execute(
            insert(rewards)
            .values(
                id=uuid.uuid4(),
                referral_id=referral_id,
                customer_id=customer_id,
                role=role,
                points=points,
                status="rewarded",
                rewarded_at=now,
            )
            .on_conflict_do_nothing(index_elements=[rewards.c.referral_id, rewards.c.role])
            .returning(rewards.c.id)
        )
    ).scalar_one_or_none()
    if reward_id is None:
        return
    await add_event(
        session,
        SCHEMA,
        ReferralRewarded(
            reward_id=reward_id,
            referral_id=referral_id,
            customer_id=customer_id,
            role=role,
            points=points,
            rewarded_at=now,
        ),
        source=SOURCE,
    )


async def expire_overdue(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> int:
    """Hourly job: expire pending referrals whose window passed with no purchase.

    The query only shortlists candidates; `evaluate` decides each one in a transaction
    of its own under the referral's lock, so a purchase arriving meanwhile wins.
    """
    now = datetime.now(UTC)
    window_end = func.coalesce(
        customers.c.signed_up_at, referrals.c.attributed_at
    ) + func.make_interval(0, 0, 0, programmes_table.c.rules["qualify_within_days"].as_integer())
    async with sessions() as session:
        candidates = (
            (
                await session.execute(
                    select(referrals.c.id)
                    .join(
                        programmes_table,
                        programmes_table.c.version == referrals.c.programme_version,
                    )
                    .outerjoin(customers, customers.c.customer_id == referrals.c.referee_id)
                    .where(
                        referrals.c.status == "pending",
                        window_end < now,
                        ~exists().where(purchases.c.customer_id == referrals.c.referee_id),
                    )
                    .order_by(referrals.c.id)
                )
            )
            .scalars()
            .all()
        )
    expired = 0
    for referral_id in candidates:
        async with sessions() as session, session.begin():
            await evaluate(session, referral_id, now=now, settings=settings)
            status = (
                await session.execute(
                    select(referrals.c.status).where(referrals.c.id == referral_id)
                )
            ).scalar_one()
            expired += status == "expired"
    return expired
