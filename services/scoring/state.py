"""Per-customer purchase state, kept incrementally from purchase events.

The rules, which `summarize` states from scratch and the event paths keep incrementally:

* A purchase *counts* (as an order, towards the distinct purchase days, the first and
  last purchase, the store and channel mix) unless refunds took it to zero. A sale that
  was given back in full is not a transaction the models should see: BG/NBD counts repeat
  purchase days, and a day whose only purchase was returned is not one. So a refund to
  zero removes the day when it was the day's only counting purchase. A partial refund
  leaves the purchase counting, with its net spend.
* `spend_minor` is the net spend of all purchases (a fully refunded one adds 0);
  `repeat_spend_minor` is the net spend on days after the first purchase day, the
  Gamma-Gamma monetary value's numerator in the `lifetimes` conventions.
* Days are calendar days in `settings.scoring_time_zone`.
* Amounts are summed as the events give them; the customer keeps the currency of their
  first purchase (a shop trades in one currency).

A purchase or a partial refund changes the row in O(1) (one index probe for "does that
day already have a purchase"). The rare changes that can move the first or last day
(a refund to zero, a merge) recompute the customer from their purchase rows.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy import exists, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.scoring.models import customers, purchases, refunds
from shared.db import merges
from shared.events.purchases import PurchaseCompleted, PurchaseRefunded

log = structlog.get_logger(__name__)

ACTIVE, MERGED, ERASED = "active", "merged", "erased"


@dataclass(frozen=True)
class PurchaseFacts:
    """What state needs of one purchase."""

    day: date
    purchased_at: datetime
    total_minor: int
    refunded_minor: int
    store_id: str | None
    channel: str

    @property
    def counts(self) -> bool:
        """False once refunds took the purchase to zero."""
        return not (self.refunded_minor > 0 and self.refunded_minor >= self.total_minor)

    @property
    def net_minor(self) -> int:
        return self.total_minor - self.refunded_minor


@dataclass(frozen=True)
class Aggregates:
    """The purchase state of one customer, as stored in `customers`."""

    orders: int = 0
    purchase_days: int = 0
    spend_minor: int = 0
    repeat_spend_minor: int = 0
    first_purchase_at: datetime | None = None
    last_purchase_at: datetime | None = None
    first_day: date | None = None
    last_day: date | None = None
    stores: dict[str, int] = field(default_factory=dict)
    channels: dict[str, int] = field(default_factory=dict)

    def values(self) -> dict[str, Any]:
        """The column values of the `customers` row."""
        return {
            "orders": self.orders,
            "purchase_days": self.purchase_days,
            "spend_minor": self.spend_minor,
            "repeat_spend_minor": self.repeat_spend_minor,
            "first_purchase_at": self.first_purchase_at,
            "last_purchase_at": self.last_purchase_at,
            "first_day": self.first_day,
            "last_day": self.last_day,
            "stores": self.stores,
            "channels": self.channels,
        }

    @classmethod
    def of_row(cls, row: Any) -> Aggregates:
        """The aggregates a `customers` row holds."""
        return cls(
            orders=int(row.orders),
            purchase_days=int(row.purchase_days),
            spend_minor=int(row.spend_minor),
            repeat_spend_minor=int(row.repeat_spend_minor),
            first_purchase_at=row.first_purchase_at,
            last_purchase_at=row.last_purchase_at,
            first_day=row.first_day,
            last_day=row.last_day,
            stores=dict(row.stores),
            channels=dict(row.channels),
        )


def summarize(bought: Iterable[PurchaseFacts]) -> Aggregates:
    """The state from scratch: the definition the incremental paths must agree with."""
    items = list(bought)
    counting = [p for p in items if p.counts]
    spend = sum(p.net_minor for p in items)
    if not counting:
        return Aggregates(spend_minor=spend)
    first_day = min(p.day for p in counting)
    return Aggregates(
        orders=len(counting),
        purchase_days=len({p.day for p in counting}),
        spend_minor=spend,
        repeat_spend_minor=sum(p.net_minor for p in items if p.day > first_day),
        first_purchase_at=min(p.purchased_at for p in counting),
        last_purchase_at=max(p.purchased_at for p in counting),
        first_day=first_day,
        last_day=max(p.day for p in counting),
        stores=dict(Counter(p.store_id for p in counting if p.store_id is not None)),
        channels=dict(Counter(p.channel for p in counting)),
    )


def local_day(moment: datetime, zone: str) -> date:
    """The business day `moment` falls on."""
    return moment.astimezone(ZoneInfo(zone)).date()


def _bump(counts: Mapping[str, int], key: str | None, by: int) -> dict[str, int]:
    result = dict(counts)
    if key is None:
        return result
    result[key] = result.get(key, 0) + by
    if result[key] <= 0:
        del result[key]
    return result


async def survivor_of(session: AsyncSession, customer_id: uuid.UUID) -> uuid.UUID:
    """The customer that now holds `customer_id`'s history (itself unless merged)."""
    return await merges.survivor_of(session, customers, customer_id)


async def lock_customer(session: AsyncSession, customer_id: uuid.UUID, now: datetime) -> Any:
    """The customer's row, created empty when unknown, locked for this transaction."""
    await session.execute(
        insert(customers)
        .values(
            customer_id=customer_id,
            status=ACTIVE,
            orders=0,
            purchase_days=0,
            spend_minor=0,
            repeat_spend_minor=0,
            stores={},
            channels={},
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=[customers.c.customer_id])
    )
    return (
        await session.execute(
            select(customers).where(customers.c.customer_id == customer_id).with_for_update()
        )
    ).one()


async def _store(
    session: AsyncSession, customer_id: uuid.UUID, values: Mapping[str, Any], now: datetime
) -> None:
    await session.execute(
        update(customers)
        .where(customers.c.customer_id == customer_id)
        .values(**values, updated_at=now)
    )


async def purchases_of(session: AsyncSession, customer_id: uuid.UUID) -> list[PurchaseFacts]:
    """Every purchase row of a customer (merged duplicates' rows were moved to it)."""
    rows = await session.execute(
        select(
            purchases.c.day,
            purchases.c.purchased_at,
            purchases.c.total_minor,
            purchases.c.refunded_minor,
            purchases.c.store_id,
            purchases.c.channel,
        ).where(purchases.c.customer_id == customer_id)
    )
    return [
        PurchaseFacts(
            day=row.day,
            purchased_at=row.purchased_at,
            total_minor=int(row.total_minor),
            refunded_minor=int(row.refunded_minor),
            store_id=row.store_id,
            channel=row.channel,
        )
        for row in rows
    ]


async def recompute(session: AsyncSession, customer_id: uuid.UUID, now: datetime) -> Aggregates:
    """Rebuild a customer's state from their purchase rows (the slow, rare path)."""
    state = summarize(await purchases_of(session, customer_id))
    await _store(session, customer_id, state.values(), now)
    return state


async def _day_has_other_purchase(
    session: AsyncSession, customer_id: uuid.UUID, day: date, purchase_id: uuid.UUID
) -> bool:
    """True when another counting purchase of the customer fell on `day`."""
    query = select(
        exists().where(
            purchases.c.customer_id == customer_id,
            purchases.c.day == day,
            purchases.c.id != purchase_id,
            ~(
                (purchases.c.refunded_minor > 0)
                & (purchases.c.refunded_minor >= purchases.c.total_minor)
            ),
        )
    )
    return bool((await session.execute(query)).scalar_one())


async def add_purchase(
    session: AsyncSession, event: PurchaseCompleted, *, zone: str, now: datetime
) -> uuid.UUID | None:
    """Apply a purchase once (keyed by purchase id); the customer changed, or None."""
    customer_id = await survivor_of(session, event.customer_id)
    row = await lock_customer(session, customer_id, now)
    day = local_day(event.purchased_at, zone)
    inserted = (
        await session.execute(
            insert(purchases)
            .values(
                id=event.purchase_id,
                customer_id=customer_id,
                day=day,
                currency=event.currency,
                total_minor=event.total_minor,
                refunded_minor=0,
                store_id=event.store_id,
                channel=event.channel,
                purchased_at=event.purchased_at,
            )
            .on_conflict_do_nothing(index_elements=[purchases.c.id])
            .returning(purchases.c.id)
        )
    ).scalar_one_or_none()
    if inserted is None:
        return None
    old = Aggregates.of_row(row)
    spend = old.spend_minor + event.total_minor
    values: dict[str, Any] = {
        "orders": old.orders + 1,
        "spend_minor": spend,
        "stores": _bump(old.stores, event.store_id, 1),
        "channels": _bump(old.channels, event.channel, 1),
        "currency": row.currency or event.currency,
    }
    if old.first_day is None or old.first_purchase_at is None or old.last_purchase_at is None:
        # The first counting purchase: earlier ones, if any, were refunded to zero.
        values |= {
            "purchase_days": 1,
            "repeat_spend_minor": 0,
            "first_day": day,
            "last_day": day,
            "first_purchase_at": event.purchased_at,
            "last_purchase_at": event.purchased_at,
        }
    else:
        new_day = not await _day_has_other_purchase(session, customer_id, day, event.purchase_id)
        if day < old.first_day:
            # Every earlier purchase now lies after the first day: all of it is repeat spend.
            repeat = old.spend_minor
        elif day > old.first_day:
            repeat = old.repeat_spend_minor + event.total_minor
        else:
            repeat = old.repeat_spend_minor
        values |= {
            "purchase_days": old.purchase_days + (1 if new_day else 0),
            "repeat_spend_minor": repeat,
            "first_day": min(old.first_day, day),
            "last_day": max(old.last_day or day, day),
            "first_purchase_at": min(old.first_purchase_at, event.purchased_at),
            "last_purchase_at": max(old.last_purchase_at, event.purchased_at),
        }
    await _store(session, customer_id, values, now)
    return customer_id


async def add_refund(
    session: AsyncSession, event: PurchaseRefunded, *, now: datetime
) -> uuid.UUID | None:
    """Apply a refund once (keyed by refund id); the customer changed, or None.

    A refund of a purchase scoring never saw (one from before the service ran) changes
    nothing and is logged. Refunds beyond what was paid are capped at the purchase total,
    as the purchase can give back no more than it brought in.
    """
    owner = (
        await session.execute(
            select(purchases.c.customer_id).where(purchases.c.id == event.purchase_id)
        )
    ).scalar_one_or_none()
    if owner is None:
        log.warning("scoring.refund.unknown_purchase", purchase_id=str(event.purchase_id))
        return None
    # Customer first, then purchase: the order a merge takes its locks in.
    customer_id = await survivor_of(session, uuid.UUID(str(owner)))
    row = await lock_customer(session, customer_id, now)
    purchase = (
        await session.execute(
            select(purchases).where(purchases.c.id == event.purchase_id).with_for_update()
        )
    ).one()
    recorded = (
        await session.execute(
            insert(refunds)
            .values(
                id=event.refund_id,
                purchase_id=event.purchase_id,
                amount_minor=event.amount_minor,
                refunded_at=event.refunded_at,
            )
            .on_conflict_do_nothing(index_elements=[refunds.c.id])
            .returning(refunds.c.id)
        )
    ).scalar_one_or_none()
    if recorded is None:
        return None
    applied = min(event.amount_minor, int(purchase.total_minor) - int(purchase.refunded_minor))
    if applied <= 0:
        return None
    before = PurchaseFacts(
        day=purchase.day,
        purchased_at=purchase.purchased_at,
        total_minor=int(purchase.total_minor),
        refunded_minor=int(purchase.refunded_minor),
        store_id=purchase.store_id,
        channel=purchase.channel,
    )
    await session.execute(
        update(purchases)
        .where(purchases.c.id == purchase.id)
        .values(refunded_minor=before.refunded_minor + applied)
    )
    if before.refunded_minor + applied >= before.total_minor:
        # Refunded to zero: the purchase stops counting and may take its day with it.
        await recompute(session, customer_id, now)
        return customer_id
    old = Aggregates.of_row(row)
    repeat = old.repeat_spend_minor
    if old.first_day is not None and before.day > old.first_day:
        repeat -= applied
    await _store(
        session,
        customer_id,
        {"spend_minor": old.spend_minor - applied, "repeat_spend_minor": repeat},
        now,
    )
    return customer_id
