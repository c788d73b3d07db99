"""Following customer merges through a service's own projection of customers.

Each service that keeps a row per customer marks a duplicate that contacts merged away
with `status = 'merged'` and `merged_into = <survivor>`. Events may still name the
duplicate (they were in flight, or an outside system kept the old id), and a GDPR export
must include everything held under ids folded into the customer. Merges can chain
(B into A, later A into C), so both directions follow the links, at most `MAX_HOPS`
deep so a corrupted cycle cannot hang a handler.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncSession

MAX_HOPS = 16
MERGED = "merged"


async def survivor_of(session: AsyncSession, table: Table, customer_id: uuid.UUID) -> uuid.UUID:
    """The customer that now stands for `customer_id` (itself unless merged away).

    `table` has `customer_id`, `status` and `merged_into` columns.
    """
    current = customer_id
    statement = select(table.c.merged_into).where(table.c.status == MERGED)
    for _ in range(MAX_HOPS):
        target: Any = (
            await session.execute(statement.where(table.c.customer_id == current))
        ).scalar_one_or_none()
        if target is None:
            return current
        current = uuid.UUID(str(target))
    return current


async def merged_into(
    session: AsyncSession, table: Table, customer_id: uuid.UUID
) -> list[uuid.UUID]:
    """The ids folded into `customer_id`, directly or through earlier merges."""
    found: list[uuid.UUID] = []
    frontier = [customer_id]
    for _ in range(MAX_HOPS):
        if not frontier:
            break
        rows = await session.execute(
            select(table.c.customer_id).where(table.c.merged_into.in_(frontier))
        )
        frontier = [
            uuid.UUID(str(row)) for row in rows.scalars() if row not in found and row != customer_id
        ]
        found.extend(frontier)
    return found
