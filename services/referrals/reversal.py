"""Taking a qualified referral's rewards back when its qualifying purchase is refunded.

The decision is made from all the stored refunds of that purchase, in the order they
happened: the referral is cancelled when some refund inside the return window left the
friend with less than the programme's minimum. Reading the stored refunds (rather than
only the refund in hand) also covers a refund stored before the referral qualified, and
makes a repeat harmless: a reversed referral is not looked at again.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.referrals import programmes, projection, rules
from services.referrals.models import SCHEMA, referrals, rewards
from shared.events.referrals import ReferralReversed
from shared.pipeline.outbox import add_event
from shared.settings import Settings

log = structlog.get_logger(__name__)

SOURCE = "referrals"
REASON = "qualifying purchase refunded"


def _cancelled(
    purchase: projection.Purchase,
    refunds: list[projection.Refund],
    minimum_minor: int,
    return_window: timedelta,
) -> bool:
    refunded = 0
    for refund in refunds:
        refunded += refund.amount_minor
        kept = purchase.total_minor - refunded
        if rules.refund_cancels(
            purchase.purchased_at, refund.refunded_at, kept, minimum_minor, return_window
        ):
            return True
    return False


async def check(
    session: AsyncSession, purchase_id: uuid.UUID, *, now: datetime, settings: Settings
) -> None:
    """Reverse the qualified referral this purchase qualified, if its refunds cancel it."""
    referral = (
        await session.execute(
            select(referrals)
            .where(referrals.c.purchase_id == purchase_id, referrals.c.status == "qualified")
            .with_for_update()
        )
    ).one_or_none()
    if referral is None or referral.programme_version is None:
        return  # nothing qualified on it, or nothing was awarded for it
    purchase = await projection.purchase(session, purchase_id)
    if purchase is None:
        return
    programme = await programmes.programme_version(session, referral.programme_version)
    window = timedelta(days=settings.referrals_return_window_days)
    refunds = await projection.refunds_of(session, purchase_id)
    if not _cancelled(purchase, refunds, programme.minimum_purchase_minor, window):
        return
    await session.execute(
        update(referrals)
        .where(referrals.c.id == referral.id)
        .values(status="reversed", closed_at=now)
    )
    taken_back = await session.execute(
        update(rewards)
        .where(rewards.c.referral_id == referral.id, rewards.c.status == "rewarded")
        .values(status="reversed", reversed_at=now)
        .returning(rewards.c.id, rewards.c.customer_id, rewards.c.points)
    )
    for reward in taken_back.all():
        await add_event(
            session,
            SCHEMA,
            ReferralReversed(
                reward_id=reward.id,
                referral_id=referral.id,
                customer_id=reward.customer_id,
                points=int(reward.points),
                reason=REASON,
                reversed_at=now,
            ),
            source=SOURCE,
        )
    log.info("referrals.referral.reversed", referral_id=str(referral.id))
