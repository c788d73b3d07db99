"""Many ledger credits in one round trip, for the purchase consumer's batches.

`ledger.credit` costs a statement per credit, which caps a consumer at a few hundred
purchases a second. Here the caller, which holds the members' locks and knows their debt,
works out each credit's repayment in order and hands the lot over as arrays: one
statement appends the entries, opens their lots (in the given order, so older points keep
lower lot ids and are consumed first) and moves each member's balance and debt once.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.loyalty.models import SCHEMA


@dataclass(frozen=True)
class Credit:
    """One credit: `repaid` of its `points` go to the member's debt, the rest to a lot."""

    customer_id: uuid.UUID
    points: int
    repaid: int
    reference: str
    available_at: datetime
    expires_at: datetime | None


_CREDIT_MANY = text(
    f"""
    WITH input AS (
        SELECT *
        FROM unnest(
            CAST(:customer_ids AS uuid[]), CAST(:points AS bigint[]),
            CAST(:repaid AS bigint[]), CAST(:references AS text[]),
            CAST(:available_at AS timestamptz[]), CAST(:expires_at AS timestamptz[])
        ) WITH ORDINALITY AS i(customer_id, points, repaid, reference, available_at,
                               expires_at, position)
    ), entry AS (
        INSERT INTO "{SCHEMA}".ledger
            (customer_id, kind, points, reference, available_at, expires_at, created_at)
        SELECT customer_id, CAST(:kind AS text), points, reference, available_at,
               expires_at, CAST(:now AS timestamptz)
        FROM input
        ORDER BY position
        ON CONFLICT (kind, reference) WHERE reference IS NOT NULL DO NOTHING
        RETURNING id, reference
    ), lot AS (
        INSERT INTO "{SCHEMA}".lots
            (customer_id, ledger_id, points, remaining, available_at, expires_at)
        SELECT i.customer_id, entry.id, i.points, i.points - i.repaid, i.available_at,
               i.expires_at
        FROM entry JOIN input AS i USING (reference)
        WHERE i.points > 0
        ORDER BY i.position
    ), member AS (
        UPDATE "{SCHEMA}".members AS m
        SET balance = m.balance + moved.points,
            debt = m.debt - moved.repaid,
            updated_at = CAST(:now AS timestamptz)
        FROM (
            SELECT i.customer_id, sum(i.points) AS points, sum(i.repaid) AS repaid
            FROM entry JOIN input AS i USING (reference)
            GROUP BY i.customer_id
        ) AS moved
        WHERE m.customer_id = moved.customer_id
    )
    SELECT reference FROM entry
    """
)


async def credit_many(
    session: AsyncSession, credits: Sequence[Credit], *, kind: str, now: datetime
) -> set[str]:
    """Append `credits` (the members locked by the caller); the references written.

    A credit whose (kind, reference) is already in the ledger is skipped, as
    `ledger.credit` skips it, and its reference is missing from the result.
    """
    if not credits:
        return set()
    for credit in credits:
        assert 0 <= credit.repaid <= credit.points
    rows = await session.execute(
        _CREDIT_MANY,
        {
            "customer_ids": [c.customer_id for c in credits],
            "points": [c.points for c in credits],
            "repaid": [c.repaid for c in credits],
            "references": [c.reference for c in credits],
            "available_at": [c.available_at for c in credits],
            "expires_at": [c.expires_at for c in credits],
            "kind": kind,
            "now": now,
        },
    )
    return {reference for (reference,) in rows}
