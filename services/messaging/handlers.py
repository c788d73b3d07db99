"""What messaging does with other services' events: one routing table, thin handlers.

Each customer event first updates the recipients projection (`recipients`), then goes to
the journeys (`triggers.on_event`), in the same transaction: a journey sees the facts the
event brought (the consent just granted, the tier just reached). Events naming a customer
merged away are applied to, and handed on as events of, the survivor.

* contacts: profile, consents and the double opt-in request (a journey of its own);
  `customer.merged` and `customer.erased` fold and erase (`merging`);
* loyalty: tier, points balance after every entry, points about to expire;
* referrals: `referral.rewarded` starts a journey only;
* scoring: churn band and risk, CLV, RFM segment, and segment membership;
* purchases: the last purchase, and the conversion it may be of a message (`conversions`).
  `purchase.refunded` is not consumed: conversions report revenue as purchased.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.messaging import conversions, merging, recipients
from shared.events.contacts import (
    ConsentChanged,
    ConsentConfirmationRequested,
    CustomerErased,
    CustomerMerged,
    CustomerSignedUp,
    CustomerUpdated,
)
from shared.events.envelope import Event, EventEnvelope
from shared.events.loyalty import (
    PointsAdjusted,
    PointsEarned,
    PointsExpired,
    PointsExpiring,
    PointsRedeemed,
    TierChanged,
)
from shared.events.purchases import PurchaseCompleted, PurchaseRefunded
from shared.events.referrals import ReferralRewarded
from shared.events.scoring import CustomerScored, SegmentEntered, SegmentExited
from shared.pipeline.consumer import Handler
from shared.settings import Settings


@dataclass(frozen=True)
class Context:
    """What a projection step needs besides the event: the survivor's id and the clock."""

    customer_id: uuid.UUID
    now: datetime
    envelope: EventEnvelope
    settings: Settings


Step = Callable[[AsyncSession, Any, Context], Awaitable[None]]


async def _signup(session: AsyncSession, event: CustomerSignedUp, c: Context) -> None:
    await recipients.apply_signup(session, c.customer_id, event.profile, event.signed_up_at, c.now)


async def _profile(session: AsyncSession, event: CustomerUpdated, c: Context) -> None:
    await recipients.apply_profile(session, c.customer_id, event.profile, event.updated_at, c.now)


async def _consent(session: AsyncSession, event: ConsentChanged, c: Context) -> None:
    await recipients.apply_consent(
        session, c.customer_id, event.channel, event.status, event.changed_at, c.now
    )


async def _known(session: AsyncSession, _: Event, c: Context) -> None:
    """Events that only start a journey still make the customer known here."""
    await recipients.ensure(session, c.customer_id, c.now)


async def _tier(session: AsyncSession, event: TierChanged, c: Context) -> None:
    await recipients.apply_tier(session, c.customer_id, event.tier, event.changed_at, c.now)


def _points(moment: str) -> Step:
    """Loyalty's balance after an entry; `moment` names the event's time field."""

    async def step(session: AsyncSession, event: Any, c: Context) -> None:
        await recipients.apply_points(
            session, c.customer_id, event.balance, getattr(event, moment), c.now
        )

    return step


async def _expired(session: AsyncSession, event: PointsExpired, c: Context) -> None:
    await recipients.apply_expired(session, c.customer_id, event.balance, event.expired_at, c.now)


async def _expiring(session: AsyncSession, event: PointsExpiring, c: Context) -> None:
    # The notice carries no time of its own; when loyalty published it is the envelope's.
    await recipients.apply_expiring(
        session, c.customer_id, event.points, event.expires_at, c.envelope.time, c.now
    )


async def _scored(session: AsyncSession, event: CustomerScored, c: Context) -> None:
    scores = {
        "churn_band": event.churn_band,
        "churn_risk": event.churn_risk,
        "clv": event.clv,
        "rfm_segment": event.rfm_segment,
    }
    await recipients.apply_scores(session, c.customer_id, scores, event.scored_at, c.now)


async def _entered(session: AsyncSession, event: SegmentEntered, c: Context) -> None:
    await recipients.apply_segment(
        session,
        c.customer_id,
        event.segment_id,
        event.segment_name,
        member=True,
        moment=event.entered_at,
        now=c.now,
    )


async def _exited(session: AsyncSession, event: SegmentExited, c: Context) -> None:
    await recipients.apply_segment(
        session,
        c.customer_id,
        event.segment_id,
        event.segment_name,
        member=False,
        moment=event.exited_at,
        now=c.now,
    )


async def _purchase(session: AsyncSession, event: PurchaseCompleted, c: Context) -> None:
    await recipients.apply_purchase(session, c.customer_id, event.purchased_at, c.now)
    await conversions.record_purchase(
        session, event, c.customer_id, c.settings.messaging_attribution_days
    )


def customer_handler(step: Step, settings: Settings) -> Handler:
    """Resolve the survivor, update the projection, then let the journeys react."""

    async def handle(session: AsyncSession, event: Any, envelope: EventEnvelope) -> None:
        # Imported here so the routing table loads even while journeys are reworked.
        from services.messaging import triggers

        now = datetime.now(UTC)
        customer_id = await recipients.survivor_of(session, event.customer_id)
        await step(session, event, Context(customer_id, now, envelope, settings))
        if customer_id != event.customer_id:
            event = event.model_copy(update={"customer_id": customer_id})
        await triggers.on_event(session, event, now=now, settings=settings)

    return handle


async def apply_refund(session: AsyncSession, event: PurchaseRefunded, _: EventEnvelope) -> None:
    """Net a refund out of the conversion revenue it belongs to (once per refund)."""
    await conversions.record_refund(session, event)


async def apply_merge(session: AsyncSession, event: CustomerMerged, _: EventEnvelope) -> None:
    """Fold the duplicate into the survivor (once per duplicate)."""
    await merging.merge(session, event, datetime.now(UTC))


async def apply_erasure(session: AsyncSession, event: CustomerErased, _: EventEnvelope) -> None:
    """Drop the customer's personal data and cancel what is still queued for them."""
    await merging.erase(session, event.customer_id, datetime.now(UTC))


def handlers(settings: Settings) -> dict[type[Event], Handler]:
    """The routing table: event model -> handler."""
    steps: dict[type[Event], Step] = {
        CustomerSignedUp: _signup,
        CustomerUpdated: _profile,
        ConsentChanged: _consent,
        ConsentConfirmationRequested: _known,
        TierChanged: _tier,
        PointsEarned: _points("earned_at"),
        PointsAdjusted: _points("adjusted_at"),
        PointsRedeemed: _points("redeemed_at"),
        PointsExpired: _expired,
        PointsExpiring: _expiring,
        ReferralRewarded: _known,
        CustomerScored: _scored,
        SegmentEntered: _entered,
        SegmentExited: _exited,
        PurchaseCompleted: _purchase,
    }
    table: dict[type[Event], Handler] = {
        model: customer_handler(step, settings) for model, step in steps.items()
    }
    return table | {
        CustomerMerged: apply_merge,
        CustomerErased: apply_erasure,
        PurchaseRefunded: apply_refund,
    }
