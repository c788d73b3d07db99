"""Folding a duplicate member into its survivor (`customer.merged`).

The duplicate's whole points history moves: its lots (all of them, so a later release of
a reservation or a refund finds the lots it consumed on the survivor), purchases,
redemptions, debt and stamp cards (an open card is folded into the survivor's open card
of the same definition, see `stamps.merge_cards`). Each side gets one ledger entry
(`merge_out` on the duplicate, `merge_in` on the survivor, both referenced
`merge:{duplicate}`), so that for EACH member

    members.balance == sum(ledger.points) == sum(lots.remaining) - members.debt

still holds. Debt the survivor now holds next to open lots is netted against those lots
(oldest first), as a credit would have repaid it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.loyalty import ledger, stamps
from services.loyalty.models import (
    ledger as ledger_table,
)
from services.loyalty.models import (
    lot_consumptions,
    lots,
    members,
    purchases,
    redemptions,
    tier_changes,
    tiers,
)
from shared.db import merges

MERGED = merges.MERGED


@dataclass(frozen=True)
class MergeOutcome:
    """What a merge moved (`moved=False`: it had already been applied)."""

    moved: bool
    points: int = 0
    debt: int = 0
    tier: str | None = None
    previous_tier: str | None = None
    vouchers: tuple[str, ...] = ()


async def survivor_of(session: AsyncSession, customer_id: uuid.UUID) -> uuid.UUID:
    """The member that now holds `customer_id`'s points (itself unless it was merged)."""
    return await merges.survivor_of(session, members, customer_id)


async def _rank(session: AsyncSession, tier: str | None) -> int | None:
    if tier is None:
        return None
    rank = (
        await session.execute(select(tiers.c.rank).where(tiers.c.name == tier))
    ).scalar_one_or_none()
    return None if rank is None else int(rank)


async def _better_tier(
    session: AsyncSession, survivor_tier: str | None, duplicate_tier: str | None
) -> bool:
    """True when the duplicate's tier outranks the survivor's (unknown tiers rank lowest)."""
    duplicate_rank = await _rank(session, duplicate_tier)
    if duplicate_rank is None:
        return False
    survivor_rank = await _rank(session, survivor_tier)
    return survivor_rank is None or duplicate_rank > survivor_rank


async def _net_debt(session: AsyncSession, customer_id: uuid.UUID, entry: int, debt: int) -> int:
    """Repay `debt` from the member's open lots, oldest first; returns what was repaid."""
    open_lots = (
        await session.execute(
            select(lots.c.id, lots.c.remaining)
            .where(lots.c.customer_id == customer_id, lots.c.remaining > 0)
            .order_by(lots.c.id)
            .with_for_update()
        )
    ).all()
    wanted = debt
    for lot_id, remaining in open_lots:
        if wanted == 0:
            break
        take = min(int(remaining), wanted)
        await session.execute(
            insert(lot_consumptions).values(ledger_id=entry, lot_id=lot_id, points=take)
        )
        await session.execute(
            update(lots).where(lots.c.id == lot_id).values(remaining=lots.c.remaining - take)
        )
        wanted -= take
    repaid = debt - wanted
    if repaid:
        await session.execute(
            update(members)
            .where(members.c.customer_id == customer_id)
            .values(debt=members.c.debt - repaid)
        )
    return repaid


async def merge_members(
    session: AsyncSession, survivor_id: uuid.UUID, duplicate_id: uuid.UUID, now: datetime
) -> MergeOutcome:
    """Move `duplicate_id`'s points history to `survivor_id`; a repeat changes nothing."""
    if survivor_id == duplicate_id:
        return MergeOutcome(moved=False)
    # Both rows, locked in uuid order: two merges touching the same pair cannot deadlock.
    for customer_id in sorted((survivor_id, duplicate_id)):
        await ledger.lock_member(session, customer_id, now)
    rows = {
        row.customer_id: row
        for row in (
            await session.execute(
                select(members).where(members.c.customer_id.in_([survivor_id, duplicate_id]))
            )
        ).all()
    }
    survivor, duplicate = rows[survivor_id], rows[duplicate_id]
    reference = f"merge:{duplicate_id}"
    if duplicate.status == MERGED or await ledger.entry_by_reference(
        session, "merge_out", reference
    ):
        return MergeOutcome(moved=False)

    points, debt = int(duplicate.balance), int(duplicate.debt)
    await _append(session, duplicate_id, "merge_out", -points, reference, now)
    in_entry = await _append(session, survivor_id, "merge_in", points, reference, now)
    await session.execute(
        update(lots).where(lots.c.customer_id == duplicate_id).values(customer_id=survivor_id)
    )
    await session.execute(
        update(purchases)
        .where(purchases.c.customer_id == duplicate_id)
        .values(customer_id=survivor_id)
    )
    await session.execute(
        update(redemptions)
        .where(redemptions.c.customer_id == duplicate_id)
        .values(customer_id=survivor_id)
    )
    vouchers = await stamps.merge_cards(session, survivor_id, duplicate_id, now)

    tier, previous_tier = survivor.tier, survivor.tier
    survivor_values: dict[str, object] = {
        "balance": members.c.balance + points,
        "debt": members.c.debt + debt,
        "updated_at": now,
    }
    if await _better_tier(session, survivor.tier, duplicate.tier):
        tier = duplicate.tier
        survivor_values |= {
            "tier": duplicate.tier,
            "tier_since": duplicate.tier_since,
            "tier_review_at": duplicate.tier_review_at,
        }
        await session.execute(
            insert(tier_changes).values(
                customer_id=survivor_id,
                previous_tier=previous_tier,
                tier=tier,
                reason=f"merge of {duplicate_id}",
                created_at=now,
            )
        )
    await session.execute(
        update(members).where(members.c.customer_id == survivor_id).values(**survivor_values)
    )
    await session.execute(
        update(members)
        .where(members.c.customer_id == duplicate_id)
        .values(
            status=MERGED,
            merged_into=survivor_id,
            balance=0,
            debt=0,
            # The survivor's profile carries the identifiers now; keep no copy here.
            card_number=None,
            phone=None,
            email=None,
            updated_at=now,
        )
    )
    survivor_debt = int(survivor.debt) + debt
    if survivor_debt:
        await _net_debt(session, survivor_id, in_entry, survivor_debt)
    return MergeOutcome(
        moved=True,
        points=points,
        debt=debt,
        tier=tier,
        previous_tier=previous_tier,
        vouchers=tuple(vouchers),
    )


async def _append(
    session: AsyncSession,
    customer_id: uuid.UUID,
    kind: str,
    points: int,
    reference: str,
    now: datetime,
) -> int:
    """A merge entry: no lot of its own (the lots themselves move), hence not `credit`."""
    entry = (
        await session.execute(
            insert(ledger_table)
            .values(
                customer_id=customer_id,
                kind=kind,
                points=points,
                reference=reference,
                reason="customer merge",
                created_at=now,
            )
            .returning(ledger_table.c.id)
        )
    ).scalar_one()
    return int(entry)
