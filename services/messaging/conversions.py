"""Attributing purchases to the messages that preceded them (last touch).

A purchase converts the customer's most recent message that was sent (status `sent` or
`delivered`; a bounced one reached nobody) no later than the purchase and whose
attribution window still covers it: the campaign's `attribution_days`, or
`settings.messaging_attribution_days` for triggers. Messages to duplicates merged into
the customer count as theirs.

Every purchase is stored once (`purchase_id` is the key, so a redelivery or a second
copy from an outside system changes nothing), with its revenue; `send_id` is null when no
message is attributable. Those rows let a report compare a holdout arm, which was sent
nothing, with the arms that were.

Refunds are netted out of revenue: each `purchase.refunded` is stored once by its id and
raises the conversion's `refunded_minor` (never beyond the total); a refund that arrives
before its purchase is counted when the purchase is stored. A refunded purchase still
counts as a conversion (the customer did buy after the message); revenue is net.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.messaging.models import (
    campaigns,
    conversion_refunds,
    conversions,
    recipients,
    sends,
)
from shared.db import merges
from shared.events.purchases import PurchaseCompleted, PurchaseRefunded

SENT_STATUSES = ("sent", "delivered")
CAMPAIGN_PREFIX = "campaign:"


async def attributable_send(
    session: AsyncSession, event: PurchaseCompleted, customer_id: uuid.UUID, default_days: int
) -> uuid.UUID | None:
    """The send this purchase converts, if any (see the module's rule)."""
    ids = [customer_id, *await merges.merged_into(session, recipients, customer_id)]
    days = sa.func.coalesce(campaigns.c.attribution_days, default_days)
    window_end = sends.c.sent_at + sa.func.make_interval(0, 0, 0, days)
    source_campaign = sends.c.source == sa.literal(CAMPAIGN_PREFIX) + sa.cast(
        campaigns.c.id, sa.Text
    )
    query = (
        sa.select(sends.c.id)
        .select_from(sends.outerjoin(campaigns, source_campaign))
        .where(
            sends.c.customer_id.in_(ids),
            sends.c.status.in_(SENT_STATUSES),
            sends.c.sent_at <= event.purchased_at,
            window_end >= event.purchased_at,
        )
        .order_by(sends.c.sent_at.desc(), sends.c.id)
        .limit(1)
    )
    found = (await session.execute(query)).scalar_one_or_none()
    return None if found is None else uuid.UUID(str(found))


async def record_refund(session: AsyncSession, event: PurchaseRefunded) -> bool:
    """Net a refund out of its purchase's revenue, once; False when already counted."""
    stored = await session.execute(
        insert(conversion_refunds)
        .values(
            refund_id=event.refund_id,
            purchase_id=event.purchase_id,
            amount_minor=event.amount_minor,
        )
        .on_conflict_do_nothing(index_elements=[conversion_refunds.c.refund_id])
        .returning(conversion_refunds.c.refund_id)
    )
    if stored.first() is None:
        return False
    await session.execute(
        sa.update(conversions)
        .where(conversions.c.purchase_id == event.purchase_id)
        .values(
            refunded_minor=sa.func.least(
                conversions.c.total_minor, conversions.c.refunded_minor + event.amount_minor
            )
        )
    )
    return True


async def _refunded_before(session: AsyncSession, purchase_id: uuid.UUID) -> int:
    """Refunds stored before their purchase arrived."""
    total = (
        await session.execute(
            sa.select(sa.func.coalesce(sa.func.sum(conversion_refunds.c.amount_minor), 0)).where(
                conversion_refunds.c.purchase_id == purchase_id
            )
        )
    ).scalar_one()
    return int(total)


async def record_purchase(
    session: AsyncSession, event: PurchaseCompleted, customer_id: uuid.UUID, default_days: int
) -> bool:
    """Store the purchase with its attributed send; False when it was already stored."""
    send_id = await attributable_send(session, event, customer_id, default_days)
    result = await session.execute(
        insert(conversions)
        .values(
            purchase_id=event.purchase_id,
            customer_id=customer_id,
            send_id=send_id,
            currency=event.currency,
            total_minor=event.total_minor,
            refunded_minor=min(
                event.total_minor, await _refunded_before(session, event.purchase_id)
            ),
            purchased_at=event.purchased_at,
        )
        .on_conflict_do_nothing(index_elements=[conversions.c.purchase_id])
        .returning(conversions.c.purchase_id)
    )
    return result.first() is not None
