"""Column shapes the services' table definitions share."""

from __future__ import annotations

import sqlalchemy as sa


def timestamptz(name: str, nullable: bool = True) -> sa.Column[object]:
    """A `timestamp with time zone` column: every instant the services store is zoned."""
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)
