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

Refunds are ignored: a conversion records that the customer bought after the message,
and revenue is reported as purchased. Netting refunds would need `purchase.refunded`
handled here as well; that is a reporting refinement left for later.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.messaging.models import campaigns, conversions, recipients, sends
from shared.db import merges
from shared.events.purchases import PurchaseCompleted

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
            purchased_at=event.purchased_at,
        )
        .on_conflict_do_nothing(index_elements=[conversions.c.purchase_id])
        .returning(conversions.c.purchase_id)
    )
    return result.first() is not None
