"""Purchases and refunds: store them once, credit or take back their points.

Purchases arrive over HTTP from the till and as `purchase.completed` events that other
systems publish on `crm.purchases`; both go through `record_purchase`, which is
idempotent on the purchase id and on (store, order id), so the event the HTTP path itself
publishes finds its purchase already there and changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.loyalty import expiry, ledger, stamps, tiers, txcache
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


_RULE_VERSIONS = select(
    earning_rules.c.version, earning_rules.c.rules, earning_rules.c.effective_from
).order_by(earning_rules.c.effective_from.desc(), earning_rules.c.version.desc())
_EARNED_BETWEEN = select(func.coalesce(func.sum(purchases.c.points), 0)).where(
    purchases.c.customer_id == bindparam("customer_id"),
    purchases.c.purchased_at >= bindparam("start", type_=purchases.c.purchased_at.type),
    purchases.c.purchased_at < bindparam("end", type_=purchases.c.purchased_at.type),
)
_INSERT_PURCHASE = insert(purchases).on_conflict_do_nothing().returning(purchases.c.id)
_EXISTING_PURCHASE = select(purchases.c.id, purchases.c.customer_id, purchases.c.points).where(
    (purchases.c.id == bindparam("purchase_id"))
    | (
        (purchases.c.store_id == bindparam("store_id"))
        & (purchases.c.order_id == bindparam("order_id"))
    )
)
_BALANCE = select(members.c.balance).where(members.c.customer_id == bindparam("customer_id"))

# Keys of the per-transaction memo (`txcache.memo`).
_RULES_MEMO = "purchases.rule_versions"
_EARNING_MEMO = "purchases.earning_rules"
_LADDER_MEMO = "purchases.ladder"
_DEFINITIONS_MEMO = "purchases.stamp_definitions"


async def earning_rules_at(
    session: AsyncSession, memo: dict[str, Any], moment: datetime
) -> tuple[int | None, EarningRules]:
    """`rules_at` with the tier multipliers applied, memoised for the transaction."""
    versions: Sequence[Any] | None = memo.get(_RULES_MEMO)
    if versions is None:
        versions = (await session.execute(_RULE_VERSIONS)).all()
        memo[_RULES_MEMO] = versions
    version = next((int(row.version) for row in versions if row.effective_from <= moment), None)
    earning: dict[int | None, EarningRules] = memo.setdefault(_EARNING_MEMO, {})
    rules = earning.get(version)
    if rules is None:
        base = (
            DEFAULT_RULES
            if version is None
            else EarningRules.model_validate(
                next(row.rules for row in versions if row.version == version)
            )
        )
        rules = await tiers.with_tier_multipliers(session, base, await tier_ladder(session, memo))
        earning[version] = rules
    return version, rules


async def tier_ladder(session: AsyncSession, memo: dict[str, Any]) -> list[tiers.Tier]:
    """The tier ladder, read once per transaction."""
    rungs: list[tiers.Tier] | None = memo.get(_LADDER_MEMO)
    if rungs is None:
        rungs = await tiers.ladder(session)
        memo[_LADDER_MEMO] = rungs
    return rungs


async def stamp_definitions(session: AsyncSession, memo: dict[str, Any]) -> Sequence[Any]:
    """The active stamp card definitions, read once per transaction."""
    definitions: Sequence[Any] | None = memo.get(_DEFINITIONS_MEMO)
    if definitions is None:
        definitions = await stamps.active_definitions(session)
        memo[_DEFINITIONS_MEMO] = definitions
    return definitions


def local_day(moment: datetime, zone: str) -> tuple[datetime, datetime]:
    """The start and end of the day `moment` falls on in `zone` (the per-day cap's day)."""
    start = moment.astimezone(ZoneInfo(zone)).replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + timedelta(days=1)


async def _earned_on_local_day(
    session: AsyncSession, customer_id: uuid.UUID, moment: datetime, zone: str
) -> int:
    start, end = local_day(moment, zone)
    total = (
        await session.execute(
            _EARNED_BETWEEN, {"customer_id": customer_id, "start": start, "end": end}
        )
    ).scalar_one()
    return int(total)


def facts_of(purchase: PurchaseCompleted) -> PurchaseFacts:
    """What the earning rules look at in a purchase (already validated: not again)."""
    return PurchaseFacts.model_construct(
        currency=purchase.currency,
        total_minor=purchase.total_minor,
        lines=[Line.model_construct(**dict(line)) for line in purchase.lines],
        purchased_at=purchase.purchased_at,
        store_id=purchase.store_id,
    )


def purchase_row(
    purchase: PurchaseCompleted, points: int, version: int | None, origin: str, now: datetime
) -> dict[str, Any]:
    """The `purchases` row that records `purchase`."""
    return {
        "id": purchase.purchase_id,
        "customer_id": purchase.customer_id,
        "store_id": purchase.store_id or "",
        "order_id": purchase.order_id,
        "currency": purchase.currency,
        "total_minor": purchase.total_minor,
        "refunded_minor": 0,
        "lines": [line.model_dump(mode="json") for line in purchase.lines],
        "channel": purchase.channel,
        "purchased_at": purchase.purchased_at,
        "points": points,
        "points_reversed": 0,
        "rule_version": version,
        "origin": origin,
        "created_at": now,
    }


def earn_timing(purchase: PurchaseCompleted, policy: Policy) -> tuple[datetime, datetime | None]:
    """When a purchase's points become available (after the return window), and expire."""
    available_at = purchase.purchased_at + policy.return_window
    expires_at = (
        expiry.expiry_for(purchase.purchased_at, policy.expiry_months, policy.expiry_at_period_end)
        if policy.expiry_months
        else None
    )
    return available_at, expires_at


def points_earned(
    purchase: PurchaseCompleted,
    points: int,
    timing: tuple[datetime, datetime | None],
    balance: int,
    now: datetime,
) -> PointsEarned:
    """The `points.earned` event of a recorded purchase."""
    return PointsEarned(
        customer_id=purchase.customer_id,
        points=points,
        reason="purchase",
        purchase_id=purchase.purchase_id,
        available_at=timing[0],
        expires_at=timing[1],
        balance=balance,
        earned_at=now,
    )


async def record_purchase(
    session: AsyncSession,
    purchase: PurchaseCompleted,
    policy: Policy,
    *,
    origin: str,
    now: datetime,
) -> Recorded:
    """Store `purchase` and credit its points; a repeat returns the first outcome.

    The member is locked once and its row (tier, debt, balance) passed down; the rules,
    the tier ladder and the stamp card definitions are read once per transaction.
    """
    member = await ledger.lock_member(session, purchase.customer_id, now)
    memo = txcache.memo(session)
    version, rules = await earning_rules_at(session, memo, purchase.purchased_at)
    earned_today = (
        await _earned_on_local_day(
            session, purchase.customer_id, purchase.purchased_at, rules.time_zone
        )
        if rules.per_day_cap is not None
        else 0
    )
    points = points_for(facts_of(purchase), rules, tier=member.tier, earned_today=earned_today)
    inserted = (
        await session.execute(
            _INSERT_PURCHASE, purchase_row(purchase, points, version, origin, now)
        )
    ).scalar_one_or_none()
    if inserted is None:
        existing = (
            await session.execute(
                _EXISTING_PURCHASE,
                {
                    "purchase_id": purchase.purchase_id,
                    "store_id": purchase.store_id or "",
                    "order_id": purchase.order_id,
                },
            )
        ).first()
        assert existing is not None
        balance = (
            int(member.balance)
            if existing.customer_id == purchase.customer_id
            else await _balance(session, existing.customer_id)
        )
        return Recorded(existing.id, existing.customer_id, int(existing.points), False, balance)

    timing = earn_timing(purchase, policy)
    entry = await ledger.credit(
        session,
        purchase.customer_id,
        kind="earn",
        points=points,
        reference=earn_reference(purchase.purchase_id),
        now=now,
        available_at=timing[0],
        expires_at=timing[1],
        debt=int(member.debt),
    )
    await stamps.stamp_purchase(
        session, purchase, now, locked=True, definitions=await stamp_definitions(session, memo)
    )
    await tiers.reevaluate(
        session, purchase.customer_id, now, member=member, rungs=await tier_ladder(session, memo)
    )
    # Only the credit changed the (locked) balance since the member was read.
    balance = int(member.balance) + (points if entry is not None else 0)
    if points:
        await add_event(
            session, SCHEMA, points_earned(purchase, points, timing, balance, now), source=SOURCE
        )
    return Recorded(purchase.purchase_id, purchase.customer_id, points, True, balance)


def earn_reference(purchase_id: uuid.UUID) -> str:
    """The reference of a purchase's earn entry (a refund finds its lot by it)."""
    return f"purchase:{purchase_id}"


async def _balance(session: AsyncSession, customer_id: uuid.UUID) -> int:
    return int((await session.execute(_BALANCE, {"customer_id": customer_id})).scalar_one())


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
    earn_entry = await ledger.entry_by_reference(session, "earn", earn_reference(purchase.id))
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
