"""What loyalty does with other services' events: one routing table, thin handlers.

* contacts' events keep the member projection (card, phone, email) that the till's
  purchase resolves customers by, with no call to contacts on the hot path;
* `purchase.completed` / `purchase.refunded` on `crm.purchases`, from our own HTTP path
  or from outside systems, are applied alike (idempotently).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from services.loyalty import ledger, purchases
from services.loyalty.models import members
from shared.events.contacts import CustomerErased, CustomerSignedUp, CustomerUpdated
from shared.events.envelope import Event, EventEnvelope
from shared.events.purchases import PurchaseCompleted, PurchaseRefunded
from shared.pipeline.consumer import Handler
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
    """Erasure: drop the identifiers; the anonymous ledger stays so the books balance."""
    now = datetime.now(UTC)
    await ledger.lock_member(session, event.customer_id, now)
    await session.execute(
        update(members)
        .where(members.c.customer_id == event.customer_id)
        .values(card_number=None, phone=None, email=None, status="erased", updated_at=now)
    )


def purchase_applier(policy: purchases.Policy) -> Handler:
    """The handler of `purchase.completed` under the deployment's policy."""

    async def apply_purchase(
        session: AsyncSession, event: PurchaseCompleted, envelope: EventEnvelope
    ) -> None:
        """Credit a purchase from `crm.purchases` (already-recorded ones change nothing)."""
        await purchases.record_purchase(
            session, event, policy, origin=f"event:{envelope.source}", now=datetime.now(UTC)
        )

    return apply_purchase


async def apply_refund(session: AsyncSession, event: PurchaseRefunded, _: EventEnvelope) -> None:
    """Take back a refunded share; a refund of an unknown purchase is a handler failure."""
    await purchases.record_refund(session, event, now=datetime.now(UTC))


def policy_from(settings: Settings) -> purchases.Policy:
    """The earning policy the settings describe."""
    return purchases.Policy(
        return_window=timedelta(days=settings.loyalty_return_window_days),
        expiry_months=settings.loyalty_points_expiry_months,
    )


def handlers(settings: Settings) -> dict[type[Event], Handler]:
    """The routing table: event model -> handler."""
    return {
        CustomerSignedUp: remember_profile,
        CustomerUpdated: remember_profile,
        CustomerErased: forget_profile,
        PurchaseCompleted: purchase_applier(policy_from(settings)),
        PurchaseRefunded: apply_refund,
    }
