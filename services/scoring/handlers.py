"""What scoring does with other services' events: one routing table, thin handlers.

Every handler is idempotent on the event's natural id (purchase, refund, merged customer)
on top of the consumer's inbox, so a purchase an outside system sends twice under two
event ids still counts once. Events addressed to a customer that was merged away apply to
its survivor. After each change the customer is rescored (`scores.rescore`), which also
brings their segment membership up to date.

Erasure: scoring holds no direct identifiers (no names, addresses or phones), only a
pseudonymous id with purchase facts. An erased customer's purchase rows and aggregates
stay, pseudonymous, so business metrics and fits do not shift backwards; what ties the
customer to decisions about them goes: their scores, what was published, their tier and
sign-up date, and (through rescoring) every segment membership. They are not scored or
segmented again.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from services.scoring import scores, state
from services.scoring.models import customers, purchases
from shared.events.contacts import (
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
    PointsRedeemed,
    TierChanged,
)
from shared.events.purchases import PurchaseCompleted, PurchaseRefunded
from shared.pipeline.consumer import Handler
from shared.settings import Settings

# Loyalty's events that carry the balance after them, and when each happened.
_POINTS_MOMENT: dict[type[Event], str] = {
    PointsEarned: "earned_at",
    PointsAdjusted: "adjusted_at",
    PointsRedeemed: "redeemed_at",
    PointsExpired: "expired_at",
}

CLEARED_SCORES: dict[str, Any] = {
    "fit_id": None,
    "p_alive": None,
    "churn_risk": None,
    "churn_band": None,
    "expected_purchases": None,
    "clv": None,
    "rfm_r": None,
    "rfm_f": None,
    "rfm_m": None,
    "rfm_segment": None,
    "scored_at": None,
    "published": None,
}


async def merge(
    session: AsyncSession, survivor_id: uuid.UUID, merged_id: uuid.UUID, now: datetime
) -> list[uuid.UUID]:
    """Fold the duplicate's purchases into the survivor (once); the customers changed."""
    survivor_id = await state.survivor_of(session, survivor_id)
    if survivor_id == merged_id:
        return []
    # Both rows, in a fixed order, so two merges cannot deadlock.
    locked = {
        customer_id: await state.lock_customer(session, customer_id, now)
        for customer_id in sorted((survivor_id, merged_id))
    }
    survivor, duplicate = locked[survivor_id], locked[merged_id]
    if duplicate.status == state.MERGED:
        return []
    await session.execute(
        update(purchases)
        .where(purchases.c.customer_id == merged_id)
        .values(customer_id=survivor_id)
    )
    # Customers merged into the duplicate earlier now point at the survivor directly.
    await session.execute(
        update(customers)
        .where(customers.c.merged_into == merged_id)
        .values(merged_into=survivor_id)
    )
    signed_up = [at for at in (survivor.signed_up_at, duplicate.signed_up_at) if at is not None]
    await session.execute(
        update(customers)
        .where(customers.c.customer_id == survivor_id)
        .values(
            signed_up_at=min(signed_up) if signed_up else None,
            tier=survivor.tier if survivor.tier is not None else duplicate.tier,
        )
    )
    await session.execute(
        update(customers)
        .where(customers.c.customer_id == merged_id)
        .values(
            status=state.MERGED,
            merged_into=survivor_id,
            **state.Aggregates().values(),
            **CLEARED_SCORES,
            updated_at=now,
        )
    )
    await state.recompute(session, survivor_id, now)
    return [survivor_id, merged_id]


async def erase(session: AsyncSession, customer_id: uuid.UUID, now: datetime) -> list[uuid.UUID]:
    """Stop profiling the customer; the pseudonymous purchase facts stay (module docs)."""
    row = await state.lock_customer(session, customer_id, now)
    if row.status == state.MERGED:
        return []  # its history is the survivor's; a merged row holds nothing to erase
    await session.execute(
        update(customers)
        .where(customers.c.customer_id == customer_id)
        .values(
            status=state.ERASED,
            tier=None,
            signed_up_at=None,
            locale=None,
            points_balance=None,
            points_balance_at=None,
            **CLEARED_SCORES,
            updated_at=now,
        )
    )
    return [customer_id]


def handlers(settings: Settings) -> dict[type[Event], Handler]:
    """The routing table: event model -> handler."""
    zone = settings.scoring_time_zone

    def then_rescore(
        apply: Callable[[AsyncSession, Any, datetime], Awaitable[Sequence[uuid.UUID] | None]],
    ) -> Handler:
        async def handle(session: AsyncSession, event: Any, _: EventEnvelope) -> None:
            now = datetime.now(UTC)
            changed = await apply(session, event, now)
            if changed:
                await scores.rescore(session, changed, now=now, settings=settings)

        handle.__doc__ = apply.__doc__
        return handle

    async def purchase(
        session: AsyncSession, event: PurchaseCompleted, now: datetime
    ) -> list[uuid.UUID]:
        """Count a purchase once per purchase id."""
        changed = await state.add_purchase(session, event, zone=zone, now=now)
        return [] if changed is None else [changed]

    async def refund(
        session: AsyncSession, event: PurchaseRefunded, now: datetime
    ) -> list[uuid.UUID]:
        """Take a refund off once per refund id."""
        changed = await state.add_refund(session, event, now=now)
        return [] if changed is None else [changed]

    async def signed_up(
        session: AsyncSession, event: CustomerSignedUp, now: datetime
    ) -> list[uuid.UUID]:
        """Remember when the customer joined and their locale (segments may ask)."""
        customer_id = await state.survivor_of(session, event.customer_id)
        row = await state.lock_customer(session, customer_id, now)
        locale = event.profile.locale
        if row.status != state.ACTIVE or (
            row.signed_up_at == event.signed_up_at and row.locale == locale
        ):
            return []
        await session.execute(
            update(customers)
            .where(customers.c.customer_id == customer_id)
            .values(signed_up_at=event.signed_up_at, locale=locale, updated_at=now)
        )
        return [customer_id]

    async def updated(
        session: AsyncSession, event: CustomerUpdated, now: datetime
    ) -> list[uuid.UUID]:
        """Follow the profile's locale (the only profile attribute scoring keeps)."""
        customer_id = await state.survivor_of(session, event.customer_id)
        row = await state.lock_customer(session, customer_id, now)
        if row.status != state.ACTIVE or row.locale == event.profile.locale:
            return []
        await session.execute(
            update(customers)
            .where(customers.c.customer_id == customer_id)
            .values(locale=event.profile.locale, updated_at=now)
        )
        return [customer_id]

    async def points_moved(session: AsyncSession, event: Any, now: datetime) -> list[uuid.UUID]:
        """Keep loyalty's points balance; a late copy of an older entry changes nothing.

        Loyalty publishes a member's entries in order with the balance after each, so the
        newest entry's balance is the balance.
        """
        moment: datetime = getattr(event, _POINTS_MOMENT[type(event)])
        customer_id = await state.survivor_of(session, event.customer_id)
        row = await state.lock_customer(session, customer_id, now)
        if row.status != state.ACTIVE or (
            row.points_balance_at is not None and row.points_balance_at > moment
        ):
            return []
        await session.execute(
            update(customers)
            .where(customers.c.customer_id == customer_id)
            .values(points_balance=event.balance, points_balance_at=moment, updated_at=now)
        )
        return [] if row.points_balance == event.balance else [customer_id]

    async def tier_changed(
        session: AsyncSession, event: TierChanged, now: datetime
    ) -> list[uuid.UUID]:
        """Keep the loyalty tier segments can ask about."""
        customer_id = await state.survivor_of(session, event.customer_id)
        row = await state.lock_customer(session, customer_id, now)
        if row.status != state.ACTIVE or row.tier == event.tier:
            return []
        await session.execute(
            update(customers)
            .where(customers.c.customer_id == customer_id)
            .values(tier=event.tier, updated_at=now)
        )
        return [customer_id]

    async def merged(
        session: AsyncSession, event: CustomerMerged, now: datetime
    ) -> list[uuid.UUID]:
        """Fold a duplicate into its survivor."""
        return await merge(session, event.survivor_id, event.merged_id, now)

    async def erased(
        session: AsyncSession, event: CustomerErased, now: datetime
    ) -> list[uuid.UUID]:
        """Forget the customer's scores and stop profiling them."""
        return await erase(session, event.customer_id, now)

    return {
        PurchaseCompleted: then_rescore(purchase),
        PurchaseRefunded: then_rescore(refund),
        CustomerSignedUp: then_rescore(signed_up),
        TierChanged: then_rescore(tier_changed),
        CustomerUpdated: then_rescore(updated),
        **{model: then_rescore(points_moved) for model in _POINTS_MOMENT},
        CustomerMerged: then_rescore(merged),
        CustomerErased: then_rescore(erased),
    }
