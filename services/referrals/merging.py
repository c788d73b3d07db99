"""Folding a duplicate customer into its survivor (`customer.merged`).

The duplicate's codes keep working for the survivor, the referrals it made become the
survivor's, and so do its purchases, rewards and fingerprints (so the monthly cap and
the abuse guards see one person). A survivor has at most one referrer: the duplicate's
own referral moves over only when the survivor has none, else it is rejected. A
referral between the two halves of one person would be a self-referral, so an open one
is rejected too.

The duplicate's projection row turning `merged` is the marker that the merge was
applied: a repeat finds it and changes nothing.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import structlog
from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.referrals import projection
from services.referrals.models import (
    codes,
    customers,
    fingerprints,
    purchases,
    referrals,
    rewards,
)

log = structlog.get_logger(__name__)

OPEN = ("pending", "flagged")


async def _mark_merged(
    session: AsyncSession, survivor_id: uuid.UUID, merged_id: uuid.UUID, now: datetime
) -> bool:
    """Turn the duplicate's row `merged`; False when it already was (a repeat)."""
    statement = insert(customers).values(
        customer_id=merged_id, status=projection.MERGED, merged_into=survivor_id, updated_at=now
    )
    marked = (
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=[customers.c.customer_id],
                set_={"status": projection.MERGED, "merged_into": survivor_id, "updated_at": now},
                where=customers.c.status != projection.MERGED,
            ).returning(customers.c.customer_id)
        )
    ).scalar_one_or_none()
    return marked is not None


async def _move_codes(
    session: AsyncSession, survivor_id: uuid.UUID, merged_id: uuid.UUID, now: datetime
) -> None:
    survivor_has_current = (
        await session.execute(
            select(codes.c.code).where(
                codes.c.customer_id == survivor_id, codes.c.replaced_at.is_(None)
            )
        )
    ).first() is not None
    if survivor_has_current:
        # One current code per customer: the duplicate's becomes a replaced one, which
        # still resolves for the grace period.
        await session.execute(
            update(codes)
            .where(codes.c.customer_id == merged_id, codes.c.replaced_at.is_(None))
            .values(replaced_at=now)
        )
    await session.execute(
        update(codes).where(codes.c.customer_id == merged_id).values(customer_id=survivor_id)
    )


def _reject(note: str, now: datetime) -> dict[str, object]:
    return {"status": "rejected", "closed_at": now, "note": note}


async def _move_referee_referral(
    session: AsyncSession, survivor_id: uuid.UUID, merged_id: uuid.UUID, now: datetime
) -> None:
    """The duplicate's own referral: the survivor's now, unless it has one already."""
    own = (
        await session.execute(
            select(referrals.c.id, referrals.c.referrer_id, referrals.c.status)
            .where(referrals.c.referee_id == merged_id)
            .with_for_update()
        )
    ).one_or_none()
    if own is None:
        return
    note = f"merged into {survivor_id}"
    survivor_has_one = (
        await session.execute(select(referrals.c.id).where(referrals.c.referee_id == survivor_id))
    ).first() is not None
    if survivor_has_one or own.referrer_id in (survivor_id, merged_id):
        if own.status in OPEN:
            await session.execute(
                update(referrals).where(referrals.c.id == own.id).values(**_reject(note, now))
            )
        return
    await session.execute(
        update(referrals).where(referrals.c.id == own.id).values(referee_id=survivor_id)
    )


async def _move_referrer_referrals(
    session: AsyncSession, survivor_id: uuid.UUID, merged_id: uuid.UUID, now: datetime
) -> None:
    """The referrals the duplicate made; one that named the survivor is a self-referral."""
    await session.execute(
        update(referrals)
        .where(
            referrals.c.referrer_id == merged_id,
            referrals.c.referee_id == survivor_id,
            referrals.c.status.in_(OPEN),
        )
        .values(**_reject(f"merged into {survivor_id}", now))
    )
    await session.execute(
        update(referrals)
        .where(referrals.c.referrer_id == merged_id)
        .values(referrer_id=survivor_id)
    )


async def _move_fingerprints(
    session: AsyncSession, survivor_id: uuid.UUID, merged_id: uuid.UUID
) -> None:
    moved = select(fingerprints.c.kind, fingerprints.c.value, fingerprints.c.seen_at).where(
        fingerprints.c.customer_id == merged_id
    )
    rows = (await session.execute(moved)).all()
    if rows:
        await session.execute(
            insert(fingerprints)
            .values(
                [
                    {
                        "customer_id": survivor_id,
                        "kind": row.kind,
                        "value": row.value,
                        "seen_at": row.seen_at,
                    }
                    for row in rows
                ]
            )
            .on_conflict_do_nothing()
        )
    await session.execute(delete(fingerprints).where(fingerprints.c.customer_id == merged_id))


async def merge_customers(
    session: AsyncSession, survivor_id: uuid.UUID, merged_id: uuid.UUID, now: datetime
) -> bool:
    """Move the duplicate's referral history to the survivor; False if already done."""
    if survivor_id == merged_id or not await _mark_merged(session, survivor_id, merged_id, now):
        return False
    await _move_codes(session, survivor_id, merged_id, now)
    await _move_referee_referral(session, survivor_id, merged_id, now)
    await _move_referrer_referrals(session, survivor_id, merged_id, now)
    for table in (purchases, rewards):
        await session.execute(
            update(table).where(table.c.customer_id == merged_id).values(customer_id=survivor_id)
        )
    await _move_fingerprints(session, survivor_id, merged_id)
    log.info("referrals.customer.merged", survivor_id=str(survivor_id), merged_id=str(merged_id))
    return True
