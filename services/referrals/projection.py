"""What referrals keeps of other services' facts: customers (contacts and loyalty tiers)
and purchases with their refunds.

Every write is keyed by the fact's natural id (customer id, purchase id, refund id), so
the same fact arriving again under another event id changes nothing. A merged or erased
customer's row is never brought back to life by a late or repeated profile event.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.referrals.models import codes, customers, fingerprints, purchases, refunds
from shared.db import merges

ACTIVE = "active"
MERGED = merges.MERGED
ERASED = "erased"


@dataclass(frozen=True)
class Purchase:
    """A stored purchase, as the qualification and reversal rules read it."""

    purchase_id: uuid.UUID
    customer_id: uuid.UUID
    currency: str
    total_minor: int
    refunded_minor: int
    purchased_at: datetime


@dataclass(frozen=True)
class Refund:
    """A stored refund of a purchase."""

    refund_id: uuid.UUID
    amount_minor: int
    refunded_at: datetime


async def upsert_profile(
    session: AsyncSession,
    customer_id: uuid.UUID,
    *,
    email_key: str | None,
    phone_key: str | None,
    now: datetime,
    signed_up_at: datetime | None = None,
) -> None:
    """Create or refresh an active customer's keys; merged and erased rows stay as they are."""
    values: dict[str, object] = {
        "email_key": email_key,
        "phone_key": phone_key,
        "updated_at": now,
    }
    if signed_up_at is not None:
        values["signed_up_at"] = signed_up_at
    statement = insert(customers).values(customer_id=customer_id, status=ACTIVE, **values)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[customers.c.customer_id],
            set_=values,
            where=customers.c.status == ACTIVE,
        )
    )


async def set_tier(
    session: AsyncSession, customer_id: uuid.UUID, tier: str | None, now: datetime
) -> None:
    """Remember a customer's loyalty tier (the row may come before the signup does)."""
    statement = insert(customers).values(
        customer_id=customer_id, status=ACTIVE, tier=tier, updated_at=now
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[customers.c.customer_id],
            set_={"tier": tier, "updated_at": now},
        )
    )


async def forget_customer(session: AsyncSession, customer_id: uuid.UUID, now: datetime) -> None:
    """Erasure: drop keys, fingerprints and codes (so its codes stop working).

    Rows merged into this customer lose their keys too but stay `merged`, so the merge
    stays applied. A row is written even for an unknown customer, so that a late signup
    event cannot bring the keys back.
    """
    forget = {"email_key": None, "phone_key": None, "updated_at": now}
    await session.execute(
        insert(customers)
        .values(customer_id=customer_id, status=ERASED, **forget)
        .on_conflict_do_update(
            index_elements=[customers.c.customer_id],
            set_={"status": ERASED, **forget},
            where=customers.c.status != MERGED,
        )
    )
    people = select(customers.c.customer_id).where(
        (customers.c.customer_id == customer_id) | (customers.c.merged_into == customer_id)
    )
    await session.execute(
        update(customers).where(customers.c.customer_id.in_(people)).values(**forget)
    )
    await session.execute(delete(fingerprints).where(fingerprints.c.customer_id.in_(people)))
    await session.execute(delete(codes).where(codes.c.customer_id.in_(people)))


async def status_of(session: AsyncSession, customer_id: uuid.UUID) -> str | None:
    """The customer's projection status, None when referrals has never heard of it."""
    status = (
        await session.execute(
            select(customers.c.status).where(customers.c.customer_id == customer_id)
        )
    ).scalar_one_or_none()
    return None if status is None else str(status)


async def tier_of(session: AsyncSession, customer_id: uuid.UUID) -> str | None:
    """The customer's last known loyalty tier."""
    tier = (
        await session.execute(
            select(customers.c.tier).where(customers.c.customer_id == customer_id)
        )
    ).scalar_one_or_none()
    return None if tier is None else str(tier)


async def signed_up_at(session: AsyncSession, customer_id: uuid.UUID) -> datetime | None:
    """When the customer signed up, if referrals has seen the signup."""
    moment: datetime | None = (
        await session.execute(
            select(customers.c.signed_up_at).where(customers.c.customer_id == customer_id)
        )
    ).scalar_one_or_none()
    return moment


async def survivor_of(session: AsyncSession, customer_id: uuid.UUID) -> uuid.UUID:
    """The customer that now stands for `customer_id` (itself unless it was merged away)."""
    return await merges.survivor_of(session, customers, customer_id)


async def record_purchase(
    session: AsyncSession,
    *,
    purchase_id: uuid.UUID,
    customer_id: uuid.UUID,
    currency: str,
    total_minor: int,
    purchased_at: datetime,
) -> bool:
    """Store a purchase once; False when it was already stored.

    Refunds that arrived before their purchase are already in `refunds`, so the
    refunded amount starts from their sum.
    """
    already_refunded = (
        select(func.coalesce(func.sum(refunds.c.amount_minor), 0))
        .where(refunds.c.purchase_id == purchase_id)
        .scalar_subquery()
    )
    stored = (
        await session.execute(
            insert(purchases)
            .values(
                id=purchase_id,
                customer_id=customer_id,
                currency=currency,
                total_minor=total_minor,
                refunded_minor=already_refunded,
                purchased_at=purchased_at,
            )
            .on_conflict_do_nothing(index_elements=[purchases.c.id])
            .returning(purchases.c.id)
        )
    ).scalar_one_or_none()
    return stored is not None


async def record_refund(
    session: AsyncSession,
    *,
    refund_id: uuid.UUID,
    purchase_id: uuid.UUID,
    amount_minor: int,
    refunded_at: datetime,
) -> bool:
    """Store a refund once and add it to its purchase's refunded amount; False if repeated."""
    stored = (
        await session.execute(
            insert(refunds)
            .values(
                id=refund_id,
                purchase_id=purchase_id,
                amount_minor=amount_minor,
                refunded_at=refunded_at,
            )
            .on_conflict_do_nothing(index_elements=[refunds.c.id])
            .returning(refunds.c.id)
        )
    ).scalar_one_or_none()
    if stored is None:
        return False
    await session.execute(
        update(purchases)
        .where(purchases.c.id == purchase_id)
        .values(refunded_minor=purchases.c.refunded_minor + amount_minor)
    )
    return True


def _purchase(row: Row[Any]) -> Purchase:
    return Purchase(
        purchase_id=row.id,
        customer_id=row.customer_id,
        currency=row.currency,
        total_minor=int(row.total_minor),
        refunded_minor=int(row.refunded_minor),
        purchased_at=row.purchased_at,
    )


async def first_purchase(
    session: AsyncSession, customer_id: uuid.UUID, *, since: datetime | None = None
) -> Purchase | None:
    """The customer's earliest stored purchase, at or after `since` when given (ties broken
    by id, so the answer is stable)."""
    condition = purchases.c.customer_id == customer_id
    if since is not None:
        condition = condition & (purchases.c.purchased_at >= since)
    row = (
        await session.execute(
            select(purchases)
            .where(condition)
            .order_by(purchases.c.purchased_at, purchases.c.id)
            .limit(1)
        )
    ).one_or_none()
    return None if row is None else _purchase(row)


async def purchase(session: AsyncSession, purchase_id: uuid.UUID) -> Purchase | None:
    """One stored purchase."""
    row = (
        await session.execute(select(purchases).where(purchases.c.id == purchase_id))
    ).one_or_none()
    return None if row is None else _purchase(row)


async def refunds_of(session: AsyncSession, purchase_id: uuid.UUID) -> list[Refund]:
    """A purchase's refunds in the order they happened."""
    rows = await session.execute(
        select(refunds.c.id, refunds.c.amount_minor, refunds.c.refunded_at)
        .where(refunds.c.purchase_id == purchase_id)
        .order_by(refunds.c.refunded_at, refunds.c.id)
    )
    return [Refund(row.id, int(row.amount_minor), row.refunded_at) for row in rows]
