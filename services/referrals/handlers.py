"""What referrals does with other services' events: one routing table, thin handlers.

* contacts' events keep the customers projection (the keys the abuse guards compare),
  give every new customer a code, and attribute a signup that came with one;
* loyalty's `tier.changed` keeps the tier the referrer's reward may depend on;
* `purchase.completed` / `purchase.refunded` on `crm.purchases` are stored (the
  referee's first purchase qualifies a referral, a refund of it may reverse one);
* `customer.merged` folds the duplicate into the survivor (`merging`), and
  `customer.erased` drops personal keys, fingerprints and codes.

The inbox skips a redelivered event id; the same fact under a new event id is absorbed
because every row is keyed by the fact's own id.
"""

from __future__ import annotations

from datetime import UTC, datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from services.referrals import attribution, codes, merging, projection, qualification, reversal
from services.referrals import rules as referral_rules
from shared.events.contacts import (
    CustomerErased,
    CustomerMerged,
    CustomerSignedUp,
    CustomerUpdated,
)
from shared.events.envelope import Event, EventEnvelope
from shared.events.loyalty import TierChanged
from shared.events.purchases import PurchaseCompleted, PurchaseRefunded
from shared.pipeline.consumer import Handler
from shared.settings import Settings

log = structlog.get_logger(__name__)


def _on_signup(settings: Settings) -> Handler:
    async def apply_signup(
        session: AsyncSession, event: CustomerSignedUp, _: EventEnvelope
    ) -> None:
        """Project the customer, give it a code, and attribute the code it came with."""
        now = datetime.now(UTC)
        await projection.upsert_profile(
            session,
            event.customer_id,
            email_key=referral_rules.email_key(event.profile.email),
            phone_key=referral_rules.phone_key(event.profile.phone),
            signed_up_at=event.signed_up_at,
            now=now,
        )
        if await projection.status_of(session, event.customer_id) != projection.ACTIVE:
            # A late or repeated signup of a customer merged or erased meanwhile.
            return
        await codes.ensure_code(session, event.customer_id, now)
        if not event.referral_code:
            return
        try:
            attributed = await attribution.attribute(
                session,
                referee_id=event.customer_id,
                code_text=event.referral_code,
                source="signup",
                at=event.signed_up_at,
                settings=settings,
            )
        except attribution.AttributionRefused as refused:
            # A mistyped or stale code must not fail the signup event.
            log.info(
                "referrals.signup.attribution_refused",
                customer_id=str(event.customer_id),
                reason=refused.reason,
            )
            return
        if attributed.status == "pending":
            await qualification.evaluate(
                session, attributed.referral_id, now=now, settings=settings
            )

    return apply_signup


async def apply_update(session: AsyncSession, event: CustomerUpdated, _: EventEnvelope) -> None:
    """Refresh the keys the abuse guards compare."""
    await projection.upsert_profile(
        session,
        event.customer_id,
        email_key=referral_rules.email_key(event.profile.email),
        phone_key=referral_rules.phone_key(event.profile.phone),
        now=datetime.now(UTC),
    )


async def apply_tier(session: AsyncSession, event: TierChanged, _: EventEnvelope) -> None:
    """Keep the tier; the referrer's points may depend on it."""
    survivor = await projection.survivor_of(session, event.customer_id)
    await projection.set_tier(session, survivor, event.tier, datetime.now(UTC))


def _on_purchase(settings: Settings) -> Handler:
    async def apply_purchase(
        session: AsyncSession, event: PurchaseCompleted, _: EventEnvelope
    ) -> None:
        """Store the purchase (under the survivor) and decide the referral it may qualify."""
        now = datetime.now(UTC)
        customer_id = await projection.survivor_of(session, event.customer_id)
        await projection.record_purchase(
            session,
            purchase_id=event.purchase_id,
            customer_id=customer_id,
            currency=event.currency,
            total_minor=event.total_minor,
            purchased_at=event.purchased_at,
        )
        pending = await qualification.pending_of_referee(session, customer_id)
        if pending is not None:
            await qualification.evaluate(session, pending, now=now, settings=settings)

    return apply_purchase


def _on_refund(settings: Settings) -> Handler:
    async def apply_refund(
        session: AsyncSession, event: PurchaseRefunded, _: EventEnvelope
    ) -> None:
        """Store the refund once; it may cancel the referral its purchase qualified."""
        recorded = await projection.record_refund(
            session,
            refund_id=event.refund_id,
            purchase_id=event.purchase_id,
            amount_minor=event.amount_minor,
            refunded_at=event.refunded_at,
        )
        if recorded:
            await reversal.check(
                session, event.purchase_id, now=datetime.now(UTC), settings=settings
            )

    return apply_refund


def _on_merge(settings: Settings) -> Handler:
    async def apply_merge(session: AsyncSession, event: CustomerMerged, _: EventEnvelope) -> None:
        """Fold the duplicate into the survivor, then decide the survivor's referral."""
        now = datetime.now(UTC)
        survivor_id = await projection.survivor_of(session, event.survivor_id)
        if not await merging.merge_customers(session, survivor_id, event.merged_id, now):
            return
        # The merged profile is the survivor's now.
        await projection.upsert_profile(
            session,
            survivor_id,
            email_key=referral_rules.email_key(event.profile.email),
            phone_key=referral_rules.phone_key(event.profile.phone),
            now=now,
        )
        pending = await qualification.pending_of_referee(session, survivor_id)
        if pending is not None:
            await qualification.evaluate(session, pending, now=now, settings=settings)

    return apply_merge


async def apply_erasure(session: AsyncSession, event: CustomerErased, _: EventEnvelope) -> None:
    """Forget the person; referrals and rewards keep their (pseudonymous) ids for the books."""
    await projection.forget_customer(session, event.customer_id, datetime.now(UTC))
    log.info("referrals.customer.erased", customer_id=str(event.customer_id))


def handlers(settings: Settings) -> dict[type[Event], Handler]:
    """The routing table: event model -> handler."""
    return {
        CustomerSignedUp: _on_signup(settings),
        CustomerUpdated: apply_update,
        CustomerErased: apply_erasure,
        CustomerMerged: _on_merge(settings),
        TierChanged: apply_tier,
        PurchaseCompleted: _on_purchase(settings),
        PurchaseRefunded: _on_refund(settings),
    }
