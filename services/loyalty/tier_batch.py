"""Tier upgrades for a wave of purchases (distinct customers) in a few statements.

The set-wise twin of `tiers.reevaluate` for the purchase consumer (`purchase_batch`):
the members' measures are read in one statement, the upgrades decided by the same rule
(`tiers.upgrade_for`), and the changes written with one statement per table. The
`tier.changed` events are handed back so the caller publishes each in its purchase's
place.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.loyalty import tiers
from services.loyalty.models import SCHEMA, tier_changes
from shared.events.loyalty import TierChanged

_SET_TIERS = text(
    f"""
    UPDATE "{SCHEMA}".members AS m
    SET tier = u.tier, tier_since = CAST(:tier_since AS timestamptz),
        tier_review_at = CAST(:tier_review_at AS timestamptz),
        updated_at = CAST(:updated_at AS timestamptz)
    FROM unnest(CAST(:ids AS uuid[]), CAST(:tiers AS text[])) AS u(customer_id, tier)
    WHERE m.customer_id = u.customer_id
    """
)


async def upgrade_wave(
    session: AsyncSession,
    members: Sequence[tuple[uuid.UUID, str | None]],
    ladder: list[tiers.Tier],
    now: datetime,
) -> dict[uuid.UUID, TierChanged]:
    """Move up at once the (customer, current tier) members a higher tier qualifies."""
    if not ladder or not members:
        return {}
    measures = await tiers.measures_of_many(session, [c for c, _ in members], ladder, now)
    upgrades = [
        (customer_id, current, best)
        for customer_id, current in members
        if (best := tiers.upgrade_for(ladder, current, measures[customer_id])) is not None
    ]
    if not upgrades:
        return {}
    values = tiers.tier_values(upgrades[0][2], now)
    await session.execute(
        _SET_TIERS,
        {
            "ids": [customer_id for customer_id, _, _ in upgrades],
            "tiers": [best.name for _, _, best in upgrades],
            "tier_since": values["tier_since"],
            "tier_review_at": values["tier_review_at"],
            "updated_at": values["updated_at"],
        },
    )
    await session.execute(
        tier_changes.insert(),
        [
            {
                "customer_id": customer_id,
                "previous_tier": current,
                "tier": best.name,
                "reason": "qualified",
                "created_at": now,
            }
            for customer_id, current, best in upgrades
        ],
    )
    return {
        customer_id: TierChanged(
            customer_id=customer_id,
            previous_tier=current,
            tier=best.name,
            direction="up",
            changed_at=now,
        )
        for customer_id, current, best in upgrades
    }
