"""Stamping a wave of new purchases (distinct customers) in a few statements.

`stamps.stamp_lines` costs three or four statements per stamped card; the purchase
consumer's waves (`purchase_batch`) stamp set-wise instead with the same outcome: the
members' open cards are read in one statement, filled (and completed, and replaced) in
memory in the purchases' order, then new cards, changed cards and stamp entries are
written with one statement each. The events of each purchase are handed back so the
caller can publish them in that purchase's place.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Uuid, any_, bindparam, insert, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from services.loyalty.models import SCHEMA, stamp_cards, stamp_entries
from services.loyalty.stamps import completion_events, matching_quantity, voucher_code
from shared.events.envelope import Event
from shared.events.purchases import PurchaseCompleted


@dataclass
class _Card:
    id: uuid.UUID
    customer_id: uuid.UUID
    definition_id: uuid.UUID
    stamps: int
    new: bool
    changed: bool = False
    completed_at: datetime | None = None
    voucher_code: str | None = None


_OPEN_CARDS = select(
    stamp_cards.c.id, stamp_cards.c.customer_id, stamp_cards.c.definition_id, stamp_cards.c.stamps
).where(
    stamp_cards.c.customer_id == any_(bindparam("ids", type_=ARRAY(Uuid()))),
    stamp_cards.c.completed_at.is_(None),
)
_UPDATE_CARDS = text(
    f"""
    UPDATE "{SCHEMA}".stamp_cards AS c
    SET stamps = u.stamps, completed_at = u.completed_at, voucher_code = u.voucher_code
    FROM unnest(
        CAST(:ids AS uuid[]), CAST(:stamps AS integer[]),
        CAST(:completed_at AS timestamptz[]), CAST(:codes AS text[])
    ) AS u(id, stamps, completed_at, voucher_code)
    WHERE c.id = u.id
    """
)


def _wanted(purchase: PurchaseCompleted, definitions: Sequence[Any]) -> list[tuple[Any, int]]:
    """(definition, stamps due) for the definitions the purchase's lines earn on."""
    lines = [line.model_dump() for line in purchase.lines]
    due = [(definition, matching_quantity(definition, lines)) for definition in definitions]
    return [(definition, stamps) for definition, stamps in due if stamps > 0]


async def stamp_wave(
    session: AsyncSession,
    wave: Sequence[PurchaseCompleted],
    definitions: Sequence[Any],
    now: datetime,
) -> dict[uuid.UUID, list[Event]]:
    """Stamp new purchases of distinct, locked customers; each purchase's events."""
    wanted = {purchase.purchase_id: _wanted(purchase, definitions) for purchase in wave}
    stamped = [purchase for purchase in wave if wanted[purchase.purchase_id]]
    if not stamped:
        return {}
    open_cards: dict[tuple[uuid.UUID, uuid.UUID], _Card] = {
        (row.customer_id, row.definition_id): _Card(
            row.id, row.customer_id, row.definition_id, int(row.stamps), new=False
        )
        for row in await session.execute(
            _OPEN_CARDS, {"ids": sorted({p.customer_id for p in stamped})}
        )
    }
    cards: list[_Card] = list(open_cards.values())
    entries: list[dict[str, Any]] = []
    events: dict[uuid.UUID, list[Event]] = {}
    for purchase in stamped:
        for definition, due in wanted[purchase.purchase_id]:
            required = int(definition.stamps_required)
            while due > 0:
                key = (purchase.customer_id, definition.id)
                card = open_cards.get(key)
                if card is None:
                    card = _Card(uuid.uuid4(), purchase.customer_id, definition.id, 0, new=True)
                    open_cards[key] = card
                    cards.append(card)
                take = min(due, required - card.stamps)
                card.stamps += take
                card.changed = True
                entries.append(
                    {
                        "card_id": card.id,
                        "purchase_id": purchase.purchase_id,
                        "stamps": take,
                        "created_at": now,
                    }
                )
                due -= take
                if card.stamps >= required:
                    card.completed_at = now
                    card.voucher_code = voucher_code()
                    del open_cards[key]
                    events.setdefault(purchase.purchase_id, []).extend(
                        completion_events(
                            card.id, purchase.customer_id, definition, card.voucher_code, now
                        )
                    )
    await _write(session, cards, entries, now)
    return events


async def _write(
    session: AsyncSession, cards: list[_Card], entries: list[dict[str, Any]], now: datetime
) -> None:
    new = [card for card in cards if card.new]
    changed = [card for card in cards if card.changed and not card.new]
    # Completed cards first: a member holds one open card per definition at any time.
    if changed:
        await session.execute(
            _UPDATE_CARDS,
            {
                "ids": [card.id for card in changed],
                "stamps": [card.stamps for card in changed],
                "completed_at": [card.completed_at for card in changed],
                "codes": [card.voucher_code for card in changed],
            },
        )
    if new:
        await session.execute(
            insert(stamp_cards),
            [
                {
                    "id": card.id,
                    "customer_id": card.customer_id,
                    "definition_id": card.definition_id,
                    "stamps": card.stamps,
                    "completed_at": card.completed_at,
                    "voucher_code": card.voucher_code,
                    "created_at": now,
                }
                for card in new
            ],
        )
    if entries:
        await session.execute(insert(stamp_entries), entries)
