"""The points ledger: append-only entries, earn lots consumed oldest first, debt.

Invariants (checked by the property tests):

* `members.balance` = the sum of the member's ledger entries;
* `members.balance` = the sum of the member's lots' `remaining` - `members.debt`.

A credit first repays debt (points taken back for a refund after they were spent), then
opens a lot with the rest. A debit consumes lots oldest first and records which lots it
took from, so that a released reservation can put them back; what lots cannot cover
becomes debt where that is allowed (refunds), and is refused where it is not
(redemptions). Every change locks the member's row first, so concurrent requests for one
member are applied one after another and an available balance never goes below zero.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Row, and_, bindparam, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.loyalty.models import SCHEMA, ledger, lot_consumptions, lots, members


class InsufficientPoints(Exception):
    """A debit that must be covered by available points is not."""

    def __init__(self, available: int, wanted: int) -> None:
        super().__init__(f"{available} points available, {wanted} needed")
        self.available = available
        self.wanted = wanted


@dataclass(frozen=True)
class Balances:
    """What a member holds right now."""

    balance: int
    available: int
    pending: int
    debt: int


_SELECT_MEMBER_FOR_UPDATE = (
    select(members).where(members.c.customer_id == bindparam("customer_id")).with_for_update()
)
_INSERT_MEMBER = insert(members).on_conflict_do_nothing().returning(*members.c)
_INSERT_ENTRY = (
    insert(ledger)
    .on_conflict_do_nothing(
        index_elements=["kind", "reference"], index_where=text("reference IS NOT NULL")
    )
    .returning(ledger.c.id)
)
_SELECT_DEBT = select(members.c.debt).where(members.c.customer_id == bindparam("customer_id"))
_INSERT_LOT = insert(lots)
_UPDATE_AFTER_CREDIT = (
    update(members)
    .where(members.c.customer_id == bindparam("member_id"))
    .values(
        balance=members.c.balance + bindparam("points", type_=members.c.balance.type),
        debt=members.c.debt - bindparam("repaid", type_=members.c.debt.type),
        updated_at=bindparam("now", type_=members.c.updated_at.type),
    )
)

# A credit in one round trip (the member's debt known): the entry, its lot (for points > 0)
# and the member's balance and debt; returns the entry id, no row when it already existed.
_CREDIT = text(
    f"""
    WITH entry AS (
        INSERT INTO "{SCHEMA}".ledger
            (customer_id, kind, points, reference, reason, actor, available_at, expires_at,
             created_at)
        VALUES (
            CAST(:customer_id AS uuid), CAST(:kind AS text), CAST(:points AS bigint),
            CAST(:reference AS text), CAST(:reason AS text), CAST(:actor AS text),
            CAST(:available_at AS timestamptz), CAST(:expires_at AS timestamptz),
            CAST(:now AS timestamptz)
        )
        ON CONFLICT (kind, reference) WHERE reference IS NOT NULL DO NOTHING
        RETURNING id
    ), lot AS (
        INSERT INTO "{SCHEMA}".lots
            (customer_id, ledger_id, points, remaining, available_at, expires_at)
        SELECT CAST(:customer_id AS uuid), entry.id, CAST(:points AS bigint),
               CAST(:remaining AS bigint), CAST(:available_at AS timestamptz),
               CAST(:expires_at AS timestamptz)
        FROM entry
        WHERE CAST(:points AS bigint) > 0
    ), member AS (
        UPDATE "{SCHEMA}".members
        SET balance = balance + CAST(:points AS bigint),
            debt = debt - CAST(:repaid AS bigint),
            updated_at = CAST(:now AS timestamptz)
        WHERE customer_id = CAST(:customer_id AS uuid) AND EXISTS (SELECT FROM entry)
    )
    SELECT id FROM entry
    """
)


async def lock_member(
    session: AsyncSession, customer_id: uuid.UUID, now: datetime
) -> Row[tuple[object, ...]]:
    """The member's row, created when unknown (events may arrive before the signup), locked."""
    params = {"customer_id": customer_id}
    row = (await session.execute(_SELECT_MEMBER_FOR_UPDATE, params)).one_or_none()
    if row is None:
        # A row this transaction inserted is locked by it until the end.
        row = (
            await session.execute(
                _INSERT_MEMBER,
                {
                    "customer_id": customer_id,
                    "status": "active",
                    "balance": 0,
                    "debt": 0,
                    "updated_at": now,
                },
            )
        ).one_or_none()
        if row is None:  # another transaction created it meanwhile
            row = (await session.execute(_SELECT_MEMBER_FOR_UPDATE, params)).one()
    return row


async def _append(
    session: AsyncSession,
    customer_id: uuid.UUID,
    kind: str,
    points: int,
    reference: str | None,
    now: datetime,
    *,
    reason: str | None = None,
    actor: str | None = None,
    available_at: datetime | None = None,
    expires_at: datetime | None = None,
) -> int | None:
    """Append an entry; None when an entry of this kind and reference already exists."""
    params = {
        "customer_id": customer_id,
        "kind": kind,
        "points": points,
        "reference": reference,
        "reason": reason,
        "actor": actor,
        "available_at": available_at,
        "expires_at": expires_at,
        "created_at": now,
    }
    entry = (await session.execute(_INSERT_ENTRY, params)).scalar_one_or_none()
    return None if entry is None else int(entry)


async def credit(
    session: AsyncSession,
    customer_id: uuid.UUID,
    *,
    kind: str,
    points: int,
    reference: str | None,
    now: datetime,
    available_at: datetime | None = None,
    expires_at: datetime | None = None,
    reason: str | None = None,
    actor: str | None = None,
    debt: int | None = None,
) -> int | None:
    """Add points (the member must be locked); returns the entry id, None if already there.

    `debt` is the locked member's current debt when the caller already holds it: the
    credit is then one statement (entry, lot and member update together).
    """
    assert points >= 0
    if debt is not None:
        repaid = min(debt, points)
        created = (
            await session.execute(
                _CREDIT,
                {
                    "customer_id": customer_id,
                    "kind": kind,
                    "points": points,
                    "reference": reference,
                    "reason": reason,
                    "actor": actor,
                    "available_at": available_at or now,
                    "expires_at": expires_at,
                    "now": now,
                    "remaining": points - repaid,
                    "repaid": repaid,
                },
            )
        ).scalar_one_or_none()
        return None if created is None else int(created)
    entry = await _append(
        session,
        customer_id,
        kind,
        points,
        reference,
        now,
        reason=reason,
        actor=actor,
        available_at=available_at or now,
        expires_at=expires_at,
    )
    if entry is None:
        return None
    debt = (await session.execute(_SELECT_DEBT, {"customer_id": customer_id})).scalar_one()
    repaid = min(debt, points)
    if points > 0:
        await session.execute(
            _INSERT_LOT,
            {
                "customer_id": customer_id,
                "ledger_id": entry,
                "points": points,
                "remaining": points - repaid,
                "available_at": available_at or now,
                "expires_at": expires_at,
            },
        )
    await session.execute(
        _UPDATE_AFTER_CREDIT,
        {"member_id": customer_id, "points": points, "repaid": repaid, "now": now},
    )
    return entry


async def debit(
    session: AsyncSession,
    customer_id: uuid.UUID,
    *,
    kind: str,
    points: int,
    reference: str | None,
    now: datetime,
    available_only: bool,
    allow_debt: bool,
    first_lots: list[int] | None = None,
    reason: str | None = None,
    actor: str | None = None,
) -> int | None:
    """Take points (the member must be locked), oldest lots first; None if already there.

    `first_lots` are consumed before the rest (a refund takes back its own purchase's
    lot first). Without `allow_debt`, a shortfall raises `InsufficientPoints` and
    nothing is written.
    """
    assert points >= 0
    condition = and_(lots.c.customer_id == customer_id, lots.c.remaining > 0)
    if available_only:
        condition = and_(condition, lots.c.available_at <= now)
    preferred = lots.c.id.in_(first_lots or [])
    open_lots = (
        await session.execute(
            select(lots.c.id, lots.c.remaining)
            .where(condition)
            .order_by(preferred.desc(), lots.c.id)
            .with_for_update()
        )
    ).all()
    covered = sum(remaining for _, remaining in open_lots)
    debt = (
        await session.execute(select(members.c.debt).where(members.c.customer_id == customer_id))
    ).scalar_one()
    if available_only and not allow_debt and covered - debt < points:
        raise InsufficientPoints(covered - debt, points)
    entry = await _append(
        session, customer_id, kind, -points, reference, now, reason=reason, actor=actor
    )
    if entry is None:
        return None
    wanted = points
    taken: list[dict[str, int]] = []
    for lot_id, remaining in open_lots:
        if wanted == 0:
            break
        take = min(remaining, wanted)
        taken.append({"ledger_id": entry, "lot_id": lot_id, "points": take})
        wanted -= take
    if taken:
        await session.execute(insert(lot_consumptions), taken)
        for row in taken:
            await session.execute(
                update(lots)
                .where(lots.c.id == row["lot_id"])
                .values(remaining=lots.c.remaining - row["points"])
            )
    await session.execute(
        update(members)
        .where(members.c.customer_id == customer_id)
        .values(balance=members.c.balance - points, debt=members.c.debt + wanted, updated_at=now)
    )
    return entry


async def balances(session: AsyncSession, customer_id: uuid.UUID, now: datetime) -> Balances:
    """Balance, available and pending points, and debt, as of `now`."""
    member = (
        await session.execute(
            select(members.c.balance, members.c.debt).where(members.c.customer_id == customer_id)
        )
    ).one_or_none()
    if member is None:
        return Balances(0, 0, 0, 0)
    available, pending = (
        await session.execute(
            select(
                func.coalesce(func.sum(lots.c.remaining).filter(lots.c.available_at <= now), 0),
                func.coalesce(func.sum(lots.c.remaining).filter(lots.c.available_at > now), 0),
            ).where(lots.c.customer_id == customer_id, lots.c.remaining > 0)
        )
    ).one()
    return Balances(
        balance=int(member.balance),
        available=int(available) - int(member.debt),
        pending=int(pending),
        debt=int(member.debt),
    )


async def expiring(
    session: AsyncSession, customer_id: uuid.UUID, now: datetime, within: timedelta
) -> list[tuple[int, datetime]]:
    """(points, expiry) of lots that expire within `within`, soonest first."""
    rows = await session.execute(
        select(lots.c.remaining, lots.c.expires_at)
        .where(
            lots.c.customer_id == customer_id,
            lots.c.remaining > 0,
            lots.c.expires_at.is_not(None),
            lots.c.expires_at <= now + within,
        )
        .order_by(lots.c.expires_at)
    )
    return [(int(points), expires_at) for points, expires_at in rows]


async def lots_of_entry(session: AsyncSession, entry_id: int) -> list[int]:
    """The lot a credit entry opened (a refund reverses its own purchase's lot first)."""
    rows = await session.execute(select(lots.c.id).where(lots.c.ledger_id == entry_id))
    return [int(lot_id) for (lot_id,) in rows]


async def entry_by_reference(session: AsyncSession, kind: str, reference: str) -> int | None:
    """The id of the entry of `kind` with `reference`, if any."""
    entry = (
        await session.execute(
            select(ledger.c.id).where(ledger.c.kind == kind, ledger.c.reference == reference)
        )
    ).scalar_one_or_none()
    return None if entry is None else int(entry)
