"""Rows as plain data, for the services' GDPR exports.

Each service answers `GET /v1/<service>/customers/{id}/export` with every row it keeps
about a customer and the customers merged into it, as stored; this reads one table's
rows for a set of keys in a stable order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncSession

Rows = list[dict[str, Any]]


async def rows_where(
    session: AsyncSession, table: Table, column: str, values: Sequence[Any], *order: str
) -> Rows:
    """The rows of `table` whose `column` is one of `values`, ordered by `order`."""
    if not values:
        return []
    result = await session.execute(
        select(table)
        .where(table.c[column].in_(list(values)))
        .order_by(*(table.c[name] for name in order))
    )
    return [dict(row._mapping) for row in result]
