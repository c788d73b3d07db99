"""What loyalty does with other services' events: one routing table, thin handlers.

* contacts' events keep the member projection (card, phone, email) that the till's
  purchase resolves customers by, with no call to contacts on the hot path;
* `purchase.completed` / `purchase.refunded` on `crm.purchases`, from our own HTTP path
  or from outside systems, are applied alike (idempotently); purchases a run at a time
  (`purchase_batch`), with the outcome of `purchases.record_purchase` one by one;
* `referral.rewarded` / `referral.reversed` credit and take back referral bonuses, keyed
  by the reward id so a repeat changes nothing;
* `customer.merged` folds the duplicate's points history into the survivor (`merging`).

Events addressed to a member that was merged away apply to its survivor.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.loyalty import ledger, merging, purchase_batch, purchases
from services.loyalty.models import SCHEMA, members
from shared.events.contacts import (
    CustomerErased,
    CustomerMerged,
    CustomerSignedUp,
    CustomerUpdated,
)
from shared.events.envelope import Event, EventEnvelope
from shared.events.loyalty import PointsAdjusted, PointsEarned, TierChanged
from shared.events.purchases import PurchaseCompleted, PurchaseRefunded
from shared.events.referrals import ReferralReversed, ReferralRewarded
from shared.pipeline.consumer import Handler
from shared.pipeline.outbox import add_event
from shared.settings import Settings


async def remember_profile(
    session: AsyncSession, event: CustomerSignedUp | CustomerUpdated, _: EventEnvelope
) -> None:
    """Keep the identifiers the till looks members up by."""
    now = datetime.now(UTC)
    await ledger.lock_member(session, event.customer_id, now)
    await session.execute(
        update(members)
        .where(members.c.customer_id == event.customer_id)
        .values(
            card_number=event.profile.card_number,
            phone=event.profile.phone,
            email=event.profile.email,
            updated_at=now,
        )
    )


async def forget_profile(session: AsyncSession, event: CustomerErased, _: EventEnvelope) -> None:
    """Erasure: drop the identifiers; the anonymous ledger stays so the books balance.

    Members merged into this customer lose their identifiers too; a merged row keeps its
    status and `merged_into`, so the merge stays applied (and idempotent) after erasure.
    """
    now = datetime.now(UTC)
    await ledger.lock_member(session, event.customer_id, now)
    forget = {"card_number": None, "phone": None, "email": None, "updated_at": now}
    await session.execute(
        update(members)
        .where(members.c.customer_id == event.customer_id, members.c.status != merging.MERGED)
        .values(status="erased", **forget)
    )
    await session.execute(
        update(members)
        .where(
            (members.c.customer_id == event.customer_id)
            | (members.c.merged_into == event.customer_id)
        )
        .values(**forget)
    )


async def _balance(session: AsyncSession, customer_id: uuid.UUID) -> int:
    return int(
        (
            await session.execute(
                select(members.c.balance).where(members.c.customer_id == customer_id)
            )
        ).scalar_one()
    )


async def apply_referral_reward(
    session: AsyncSession, event: ReferralRewarded, _: EventEnvelope
) -> None:
    """Credit a referral bonus once per reward id."""
    now = datetime.now(UTC)
    customer_id = await merging.survivor_of(session, event.customer_id)
    await ledger.lock_member(session, customer_id, now)
    entry = await ledger.credit(
        session,
        customer_id,
        kind="bonus",
        points=event.points,
        reference=f"referral:{event.reward_id}",
        now=now,
        reason=f"referral {event.referral_id} ({event.role})",
    )
    if entry is None:
        return
    await add_event(
        session,
        SCHEMA,
        PointsEarned(
            customer_id=customer_id,
            points=event.points,
            reason="referral-bonus",
            available_at=now,
            balance=await _balance(session, customer_id),
            earned_at=now,
        ),
        source=purchases.SOURCE,
    )


async def apply_referral_reversal(
    session: AsyncSession, event: ReferralReversed, _: EventEnvelope
) -> None:
    """Take a referral bonus back once; what was already spent becomes debt."""
    now = datetime.now(UTC)
    customer_id = await merging.survivor_of(session, event.customer_id)
    await ledger.lock_member(session, customer_id, now)
    entry = await ledger.debit(
        session,
        customer_id,
        kind="adjust",
        points=event.points,
        reference=f"referral-reversal:{event.reward_id}",
        now=now,
        available_only=False,
        allow_debt=True,
        reason=f"referral {event.referral_id} reversed: {event.reason}",
    )
    if entry is None:
        return
    await add_event(
        session,
        SCHEMA,
        PointsAdjusted(
            customer_id=customer_id,
            points=-event.points,
            reason=f"referral reversed: {event.reason}",
            balance=await _balance(session, customer_id),
            adjusted_at=now,
        ),
        source=purchases.SOURCE,
    )


async def apply_merge(session: AsyncSession, event: CustomerMerged, _: EventEnvelope) -> None:
    """Move the duplicate's points history to the survivor (once per duplicate)."""
    now = datetime.now(UTC)
    survivor_id = await merging.survivor_of(session, event.survivor_id)
    outcome = await merging.merge_members(session, survivor_id, event.merged_id, now)
    # The merged profile is the survivor's now, with the identifiers the till looks up.
    await session.execute(
        update(members)
        .where(members.c.customer_id == survivor_id, members.c.status == "active")
        .values(
            card_number=event.profile.card_number,
            phone=event.profile.phone,
            email=event.profile.email,
        )
    )
    if not outcome.moved:
        return
    if outcome.points:
        await add_event(
            session,
            SCHEMA,
            PointsAdjusted(
                customer_id=survivor_id,
                points=outcome.points,
                reason=f"merge of {event.merged_id}",
                balance=await _balance(session, survivor_id),
                adjusted_at=now,
            ),
            source=purchases.SOURCE,
        )
    if outcome.tier != outcome.previous_tier:
        await add_event(
            session,
            SCHEMA,
            TierChanged(
                customer_id=survivor_id,
                previous_tier=outcome.previous_tier,
                tier=outcome.tier,
                direction="up",
                changed_at=now,
            ),
            source=purchases.SOURCE,
        )


async def apply_refund(session: AsyncSession, event: PurchaseRefunded, _: EventEnvelope) -> None:
    """Take back a refunded share; a refund of an unknown purchase is a handler failure."""
    await purchases.record_refund(session, event, now=datetime.now(UTC))


def policy_from(settings: Settings) -> purchases.Policy:
    """The earning policy the settings describe."""
    return purchases.Policy(
        return_window=timedelta(days=settings.loyalty_return_window_days),
        expiry_months=settings.loyalty_points_expiry_months,
        expiry_at_period_end=settings.loyalty_points_expire_at_month_end,
    )


def handlers(settings: Settings) -> dict[type[Event], Handler]:
    """The routing table: event model -> handler."""
    return {
        CustomerSignedUp: remember_profile,
        CustomerUpdated: remember_profile,
        CustomerErased: forget_profile,
        PurchaseCompleted: purchase_batch.batch_applier(policy_from(settings)),
        PurchaseRefunded: apply_refund,
        ReferralRewarded: apply_referral_reward,
        ReferralReversed: apply_referral_reversal,
        CustomerMerged: apply_merge,
    }
