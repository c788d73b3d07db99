"""Purchases and refunds: store them once, credit or take back their points.

Purchases arrive over HTTP from the till and as `purchase.completed` events that other
systems publish on `crm.purchases`; both go through `record_purchase`, which is
idempotent on the purchase id and on (store, order id), so the event the HTTP path itself
publishes finds its purchase already there and changes nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.loyalty import expiry, ledger, stamps, tiers
from services.loyalty.earning import EarningRules, Line, PurchaseFacts, points_for, refund_share
from services.loyalty.models import SCHEMA, earning_rules, members, purchases, refunds
from shared.events.loyalty import PointsAdjusted, PointsEarned
from shared.events.purchases import PurchaseCompleted, PurchaseRefunded
from shared.pipeline.outbox import add_event

SOURCE = "loyalty"
DEFAULT_RULES = EarningRules(
    base_rates={"MYR": Decimal(1), "SGD": Decimal(1), "THB": Decimal("0.04")}
)


@dataclass(frozen=True)
class Policy:
    """Deployment choices (from settings)."""

    return_window: timedelta = timedelta(0)
    expiry_months: int = 12
    expiry_at_period_end: bool = False


@dataclass(frozen=True)
class Recorded:
    """The outcome of recording a purchase."""

    purchase_id: uuid.UUID
    customer_id: uuid.UUID
    points: int
    created: bool
    balance: int


class RefundRefused(Exception):
    """A refund the purchase cannot take (unknown purchase, or more than was paid)."""


async def rules_at(session: AsyncSession, moment: datetime) -> tuple[int | None, EarningRules]:
    """The rules version in force at `moment` (the defaults before any was saved)."""
    row = (
        await session.execute(
            select(earning_rules.c.version, earning_rules.c.rules)
            .where(earning_rules.c.effective_from <= moment)
            .order_by(earning_rules.c.effective_from.desc(), earning_rules.c.version.desc())
            .limit(1)
        )
    ).one_or_none()
    if row is None:
        return None, DEFAULT_RULES
    return int(row.version), EarningRules.model_validate(row.rules)


async def _earned_on_local_day(
    session: AsyncSession, customer_id: uuid.UUID, moment: datetime, zone: str
) -> int:
    local = moment.astimezone(ZoneInfo(zone))
    start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    total = (
        await session.execute(
            select(func.coalesce(func.sum(purchases.c.points), 0)).where(
                purchases.c.customer_id == customer_id,
                purchases.c.purchased_at >= start,
                purchases.c.purchased_at < start + timedelta(days=1),
            )
        )
    ).scalar_one()
    return int(total)


async def record_purchase(
    session: AsyncSession,
    purchase: PurchaseCompleted,
    policy: Policy,
    *,
    origin: str,
    now: datetime,
) -> Recorded:
    """Store `purchase` and credit its points; a repeat returns the first outcome."""
    await ledger.lock_member(session, purchase.customer_id, now)
    inserted = (
        await session.execute(
            insert(purchases)
            .values(
                id=purchase.purchase_id,
                customer_id=purchase.customer_id,
                store_id=purchase.store_id or "",
                order_id=purchase.order_id,
                currency=purchase.currency,
                total_minor=purchase.total_minor,
                refunded_minor=0,
                lines=[line.model_dump(mode="json") for line in purchase.lines],
                channel=purchase.channel,
                purchased_at=purchase.purchased_at,
                points=0,
                points_reversed=0,
                origin=origin,
                created_at=now,
            )
            .on_conflict_do_nothing()
            .returning(purchases.c.id)
        )
    ).scalar_one_or_none()
    if inserted is None:
        existing = (
            await session.execute(
                select(purchases.c.id, purchases.c.customer_id, purchases.c.points).where(
                    (purchases.c.id == purchase.purchase_id)
                    | (
                        (purchases.c.store_id == (purchase.store_id or ""))
                        & (purchases.c.order_id == purchase.order_id)
                    )
                )
            )
        ).first()
        assert existing is not None
        balance = await _balance(session, existing.customer_id)
        return Recorded(existing.id, existing.customer_id, int(existing.points), False, balance)

    version, rules = await rules_at(session, purchase.purchased_at)
    rules = await tiers.with_tier_multipliers(session, rules)
    member_tier = (
        await session.execute(
            select(members.c.tier).where(members.c.customer_id == purchase.customer_id)
        )
    ).scalar_one()
    facts = PurchaseFacts(
        currency=purchase.currency,
        total_minor=purchase.total_minor,
        lines=[Line(**line.model_dump()) for line in purchase.lines],
        purchased_at=purchase.purchased_at,
        store_id=purchase.store_id,
    )
    earned_today = await _earned_on_local_day(
        session, purchase.customer_id, purchase.purchased_at, rules.time_zone
    )
    points = points_for(facts, rules, tier=member_tier, earned_today=earned_today)
    await session.execute(
        update(purchases)
        .where(purchases.c.id == purchase.purchase_id)
        .values(points=points, rule_version=version)
    )
    available_at = purchase.purchased_at + policy.return_window
    expires_at = (
        expiry.expiry_for(purchase.purchased_at, policy.expiry_months, policy.expiry_at_period_end)
        if policy.expiry_months
        else None
    )
    await ledger.credit(
        session,
        purchase.customer_id,
        kind="earn",
        points=points,
        reference=f"purchase:{purchase.purchase_id}",
        now=now,
        available_at=available_at,
        expires_at=expires_at,
    )
    await stamps.stamp_purchase(session, purchase, now)
    await tiers.reevaluate(session, purchase.customer_id, now)
    balance = await _balance(session, purchase.customer_id)
    if points:
        await add_event(
            session,
            SCHEMA,
            PointsEarned(
                customer_id=purchase.customer_id,
                points=points,
                reason="purchase",
                purchase_id=purchase.purchase_id,
                available_at=available_at,
                expires_at=expires_at,
                balance=balance,
                earned_at=now,
            ),
            source=SOURCE,
        )
    return Recorded(purchase.purchase_id, purchase.customer_id, points, True, balance)


async def _balance(session: AsyncSession, customer_id: uuid.UUID) -> int:
    return int(
        (
            await session.execute(
                select(members.c.balance).where(members.c.customer_id == customer_id)
            )
        ).scalar_one()
    )


async def record_refund(
    session: AsyncSession, refund: PurchaseRefunded, *, now: datetime
) -> tuple[int, bool]:
    """Store a refund and take back the refunded share of the points: (points, created)."""
    purchase = (
        await session.execute(
            select(purchases).where(purchases.c.id == refund.purchase_id).with_for_update()
        )
    ).one_or_none()
    if purchase is None:
        raise RefundRefused(f"no purchase {refund.purchase_id}")
    await ledger.lock_member(session, purchase.customer_id, now)
    existing = (
        await session.execute(select(refunds.c.points).where(refunds.c.id == refund.refund_id))
    ).scalar_one_or_none()
    if existing is not None:
        return int(existing), False
    refunded = purchase.refunded_minor + refund.amount_minor
    if refunded > purchase.total_minor:
        raise RefundRefused(
            f"refunds would reach {refunded}, more than the {purchase.total_minor} paid"
        )
    due = refund_share(
        int(purchase.points), int(purchase.total_minor), refunded, int(purchase.points_reversed)
    )
    earn_entry = await ledger.entry_by_reference(session, "earn", f"purchase:{purchase.id}")
    first_lots = await ledger.lots_of_entry(session, earn_entry) if earn_entry else []
    await ledger.debit(
        session,
        purchase.customer_id,
        kind="refund_reversal",
        points=due,
        reference=f"refund:{refund.refund_id}",
        now=now,
        available_only=False,
        allow_debt=True,
        first_lots=first_lots,
        reason=f"refund of purchase {purchase.id}",
    )
    await session.execute(
        update(purchases)
        .where(purchases.c.id == purchase.id)
        .values(refunded_minor=refunded, points_reversed=purchase.points_reversed + due)
    )
    await stamps.unstamp_refund(session, purchase.id, refund.refund_id, refund.amount_minor, now)
    await session.execute(
        insert(refunds).values(
            id=refund.refund_id,
            purchase_id=purchase.id,
            amount_minor=refund.amount_minor,
            points=due,
            refunded_at=refund.refunded_at,
            created_at=now,
        )
    )
    if due:
        await add_event(
            session,
            SCHEMA,
            PointsAdjusted(
                customer_id=purchase.customer_id,
                points=-due,
                reason=f"refund of purchase {purchase.id}",
                balance=await _balance(session, purchase.customer_id),
                adjusted_at=now,
            ),
            source=SOURCE,
        )
    return due, True


def purchase_view(row: Any) -> dict[str, Any]:
    """A stored purchase as plain data."""
    return {
        "id": row.id,
        "customer_id": row.customer_id,
        "store_id": row.store_id or None,
        "order_id": row.order_id,
        "currency": row.currency,
        "total_minor": row.total_minor,
        "refunded_minor": row.refunded_minor,
        "points": row.points,
        "points_reversed": row.points_reversed,
        "purchased_at": row.purchased_at,
        "channel": row.channel,
    }
