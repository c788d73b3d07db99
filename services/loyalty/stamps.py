"""Stamp cards: "buy N of these (by SKU or category), the next one is free".

* A purchase stamps, for every active definition, the quantity of its lines whose SKU or
  category the definition names. A member has one open card per definition; the stamps
  that complete a card carry over onto a new one.
* A completed card gets a voucher code and publishes `stamp_card.completed` and
  `reward.issued` in the purchase's transaction.
* A refund takes back the refunded share of the purchase's stamps from the open card
  (the whole of them when the purchase is fully refunded), never below zero. Stamps that
  already went into a completed card are not taken back and its voucher stays valid:
  the member may already have used it, and a till cannot take back a free coffee.
* A member merge (`merge_cards`) moves the duplicate's cards to the survivor, folding an
  open card into the survivor's open card of the same definition (completing it when the
  stamps add up).

Every stamp is a `stamp_entries` row (signed), keyed by purchase and refund, which makes
stamping and un-stamping idempotent.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.loyalty import ledger
from services.loyalty.models import (
    SCHEMA,
    purchases,
    refunds,
    stamp_card_definitions,
    stamp_cards,
    stamp_entries,
)
from shared.events.envelope import Event
from shared.events.loyalty import RewardIssued, StampCardCompleted
from shared.events.purchases import PurchaseCompleted
from shared.pipeline.outbox import add_events

SOURCE = "loyalty"
_VOUCHER_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read out at tills


def voucher_code() -> str:
    """A fresh, unguessable voucher code such as `ST-7KQ2-MX9D-P4TA`."""
    chars = "".join(secrets.choice(_VOUCHER_ALPHABET) for _ in range(12))
    return f"ST-{chars[:4]}-{chars[4:8]}-{chars[8:]}"


def matching_quantity(definition: Any, lines: Sequence[Mapping[str, Any]]) -> int:
    """The stamps `lines` earn on `definition`: quantities of lines it names."""
    skus = set(definition.skus or [])
    categories = set(definition.categories or [])
    return sum(
        max(0, int(line.get("quantity") or 0))
        for line in lines
        if line.get("sku") in skus or line.get("category") in categories
    )


def refunded_stamps(granted: int, refunded_minor: int, total_minor: int) -> int:
    """Stamps due back once `refunded_minor` of `total_minor` is refunded (cumulative)."""
    if refunded_minor <= 0:
        return 0
    if refunded_minor >= total_minor:
        return granted
    return granted * refunded_minor // total_minor


async def _open_card(
    session: AsyncSession, customer_id: uuid.UUID, definition_id: uuid.UUID, now: datetime
) -> Any:
    card = (
        await session.execute(
            select(stamp_cards).where(
                stamp_cards.c.customer_id == customer_id,
                stamp_cards.c.definition_id == definition_id,
                stamp_cards.c.completed_at.is_(None),
            )
        )
    ).one_or_none()
    if card is not None:
        return card
    return (
        await session.execute(
            insert(stamp_cards)
            .values(
                id=uuid.uuid4(),
                customer_id=customer_id,
                definition_id=definition_id,
                stamps=0,
                created_at=now,
            )
            .returning(*stamp_cards.c)
        )
    ).one()


def completion_events(
    card_id: uuid.UUID, customer_id: uuid.UUID, definition: Any, code: str, now: datetime
) -> list[Event]:
    """`stamp_card.completed` and the `reward.issued` of its voucher."""
    return [
        StampCardCompleted(
            customer_id=customer_id,
            card_id=card_id,
            definition_id=definition.id,
            voucher_code=code,
            completed_at=now,
        ),
        RewardIssued(
            customer_id=customer_id,
            voucher_code=code,
            description=definition.reward_description,
            valid_until=now + timedelta(days=int(definition.voucher_valid_days)),
            issued_at=now,
        ),
    ]


async def _complete(
    session: AsyncSession,
    card_id: uuid.UUID,
    customer_id: uuid.UUID,
    definition: Any,
    now: datetime,
) -> str:
    code = voucher_code()
    await session.execute(
        update(stamp_cards)
        .where(stamp_cards.c.id == card_id)
        .values(completed_at=now, voucher_code=code)
    )
    await add_events(
        session,
        SCHEMA,
        completion_events(card_id, customer_id, definition, code, now),
        source=SOURCE,
    )
    return code


_ACTIVE_DEFINITIONS = (
    select(stamp_card_definitions)
    .where(stamp_card_definitions.c.active)
    .order_by(stamp_card_definitions.c.created_at, stamp_card_definitions.c.id)
)
_STAMPED = (
    select(stamp_entries.c.id)
    .where(stamp_entries.c.purchase_id == bindparam("purchase_id"))
    .limit(1)
)


async def active_definitions(session: AsyncSession) -> Sequence[Any]:
    """The active card definitions, oldest first."""
    return (await session.execute(_ACTIVE_DEFINITIONS)).all()


async def stamp_lines(
    session: AsyncSession,
    purchase_id: uuid.UUID,
    customer_id: uuid.UUID,
    lines: Sequence[Mapping[str, Any]],
    now: datetime,
    *,
    locked: bool = False,
    definitions: Sequence[Any] | None = None,
) -> list[str]:
    """Stamp a purchase's lines onto the member's cards; the voucher codes it completed.

    Idempotent: a purchase that already has stamp entries changes nothing. `locked`
    says the caller already holds the member's lock; `definitions` are the active
    definitions when the caller already read them in this transaction.
    """
    if not locked:
        await ledger.lock_member(session, customer_id, now)
    if definitions is None:
        definitions = await active_definitions(session)
    wanted = [(definition, matching_quantity(definition, lines)) for definition in definitions]
    if not any(due > 0 for _, due in wanted):
        return []
    done = (await session.execute(_STAMPED, {"purchase_id": purchase_id})).first()
    if done is not None:
        return []
    codes: list[str] = []
    for definition, due in wanted:
        while due > 0:
            card = await _open_card(session, customer_id, definition.id, now)
            take = min(due, int(definition.stamps_required) - int(card.stamps))
            await session.execute(
                update(stamp_cards)
                .where(stamp_cards.c.id == card.id)
                .values(stamps=stamp_cards.c.stamps + take)
            )
            await session.execute(
                insert(stamp_entries).values(
                    card_id=card.id, purchase_id=purchase_id, stamps=take, created_at=now
                )
            )
            due -= take
            if int(card.stamps) + take >= int(definition.stamps_required):
                codes.append(await _complete(session, card.id, customer_id, definition, now))
    return codes


async def stamp_purchase(
    session: AsyncSession,
    purchase: PurchaseCompleted,
    now: datetime,
    *,
    locked: bool = False,
    definitions: Sequence[Any] | None = None,
) -> list[str]:
    """Stamp a newly recorded purchase (see `stamp_lines`)."""
    lines = [line.model_dump() for line in purchase.lines]
    return await stamp_lines(
        session,
        purchase.purchase_id,
        purchase.customer_id,
        lines,
        now,
        locked=locked,
        definitions=definitions,
    )


async def unstamp_refund(
    session: AsyncSession,
    purchase_id: uuid.UUID,
    refund_id: uuid.UUID,
    amount_minor: int,
    now: datetime,
) -> int:
    """Take back the stamps a refund of `amount_minor` is due; the number taken.

    Other refunds of the purchase are read from `refunds` (whether or not this refund's
    row is written yet), so partial refunds add up to exactly the purchase's stamps.
    Idempotent per refund.
    """
    purchase = (
        await session.execute(
            select(purchases.c.customer_id, purchases.c.total_minor).where(
                purchases.c.id == purchase_id
            )
        )
    ).one_or_none()
    if purchase is None:
        return 0
    await ledger.lock_member(session, purchase.customer_id, now)
    done = (
        await session.execute(
            select(stamp_entries.c.id).where(stamp_entries.c.refund_id == refund_id).limit(1)
        )
    ).first()
    if done is not None:
        return 0
    before = int(
        (
            await session.execute(
                select(func.coalesce(func.sum(refunds.c.amount_minor), 0)).where(
                    refunds.c.purchase_id == purchase_id, refunds.c.id != refund_id
                )
            )
        ).scalar_one()
    )
    total = int(purchase.total_minor)
    granted_rows = await session.execute(
        select(stamp_cards.c.definition_id, func.sum(stamp_entries.c.stamps))
        .join(stamp_cards, stamp_cards.c.id == stamp_entries.c.card_id)
        .where(stamp_entries.c.purchase_id == purchase_id, stamp_entries.c.refund_id.is_(None))
        .group_by(stamp_cards.c.definition_id)
    )
    taken_total = 0
    for definition_id, granted in granted_rows.all():
        due = refunded_stamps(int(granted), before + amount_minor, total) - refunded_stamps(
            int(granted), before, total
        )
        if due <= 0:
            continue
        card = (
            await session.execute(
                select(stamp_cards.c.id, stamp_cards.c.stamps)
                .where(
                    stamp_cards.c.customer_id == purchase.customer_id,
                    stamp_cards.c.definition_id == definition_id,
                    stamp_cards.c.completed_at.is_(None),
                )
                .with_for_update()
            )
        ).one_or_none()
        # What the open card cannot give back went into a completed card: forgiven. The
        # entry is still written (possibly 0 stamps) so that the refund is known as done.
        take = 0 if card is None else min(due, int(card.stamps))
        if card is None:
            card_id = (
                await session.execute(
                    select(stamp_entries.c.card_id)
                    .join(stamp_cards, stamp_cards.c.id == stamp_entries.c.card_id)
                    .where(
                        stamp_entries.c.purchase_id == purchase_id,
                        stamp_cards.c.definition_id == definition_id,
                    )
                    .order_by(stamp_entries.c.id.desc())
                    .limit(1)
                )
            ).scalar_one()
        else:
            card_id = card.id
            await session.execute(
                update(stamp_cards)
                .where(stamp_cards.c.id == card_id)
                .values(stamps=stamp_cards.c.stamps - take)
            )
        await session.execute(
            insert(stamp_entries).values(
                card_id=card_id,
                purchase_id=purchase_id,
                refund_id=refund_id,
                stamps=-take,
                created_at=now,
            )
        )
        taken_total += take
    return taken_total


async def cards_of(session: AsyncSession, customer_id: uuid.UUID) -> list[dict[str, Any]]:
    """The member's cards, open ones first, then completed ones newest first."""
    rows = await session.execute(
        select(
            stamp_cards,
            stamp_card_definitions.c.name,
            stamp_card_definitions.c.stamps_required,
            stamp_card_definitions.c.reward_description,
            stamp_card_definitions.c.voucher_valid_days,
        )
        .join(stamp_card_definitions, stamp_card_definitions.c.id == stamp_cards.c.definition_id)
        .where(stamp_cards.c.customer_id == customer_id)
        .order_by(stamp_cards.c.completed_at.desc().nulls_first(), stamp_cards.c.created_at.desc())
    )
    return [
        {
            "id": row.id,
            "definition_id": row.definition_id,
            "name": row.name,
            "stamps": int(row.stamps),
            "stamps_required": int(row.stamps_required),
            "reward_description": row.reward_description,
            "completed_at": row.completed_at,
            "voucher_code": row.voucher_code,
            "voucher_valid_until": None
            if row.completed_at is None
            else row.completed_at + timedelta(days=int(row.voucher_valid_days)),
        }
        for row in rows
    ]


async def _split_overflow(
    session: AsyncSession, card_id: uuid.UUID, into: uuid.UUID, overflow: int
) -> None:
    """Move `overflow` stamps of `card_id`'s entries, newest first, onto the card `into`.

    An entry larger than what is left to move is split in two, as `stamp_lines` would have
    written it; refund entries stay where they are, so per purchase the entries still add
    up to the stamps it was granted.
    """
    rows = (
        await session.execute(
            select(stamp_entries)
            .where(
                stamp_entries.c.card_id == card_id,
                stamp_entries.c.refund_id.is_(None),
                stamp_entries.c.stamps > 0,
            )
            .order_by(stamp_entries.c.id.desc())
        )
    ).all()
    for entry in rows:
        if overflow <= 0:
            break
        if int(entry.stamps) <= overflow:
            await session.execute(
                update(stamp_entries).where(stamp_entries.c.id == entry.id).values(card_id=into)
            )
            overflow -= int(entry.stamps)
            continue
        await session.execute(
            update(stamp_entries)
            .where(stamp_entries.c.id == entry.id)
            .values(stamps=stamp_entries.c.stamps - overflow)
        )
        await session.execute(
            insert(stamp_entries).values(
                card_id=into,
                purchase_id=entry.purchase_id,
                stamps=overflow,
                created_at=entry.created_at,
            )
        )
        overflow = 0


async def merge_cards(
    session: AsyncSession, survivor_id: uuid.UUID, duplicate_id: uuid.UUID, now: datetime
) -> list[str]:
    """Move `duplicate_id`'s stamp cards to `survivor_id`; the voucher codes it completed.

    Completed cards simply change hands. An open card of a definition the survivor also
    has open is folded into the survivor's: its entries are re-pointed there (so refunds
    of its purchases find them) and the emptied card is deleted. When the combined stamps
    reach `stamps_required` the card is completed (voucher, `stamp_card.completed`,
    `reward.issued`) and the overflow carries onto a new open card, as in `stamp_lines`.
    The caller holds both members' locks and applies a merge once.
    """
    codes: list[str] = []
    for card in (
        await session.execute(
            select(stamp_cards)
            .where(stamp_cards.c.customer_id == duplicate_id, stamp_cards.c.completed_at.is_(None))
            .order_by(stamp_cards.c.created_at, stamp_cards.c.id)
            .with_for_update()
        )
    ).all():
        target = (
            await session.execute(
                select(stamp_cards)
                .where(
                    stamp_cards.c.customer_id == survivor_id,
                    stamp_cards.c.definition_id == card.definition_id,
                    stamp_cards.c.completed_at.is_(None),
                )
                .with_for_update()
            )
        ).one_or_none()
        if target is None:
            continue  # moved with the completed cards below
        await session.execute(
            update(stamp_entries)
            .where(stamp_entries.c.card_id == card.id)
            .values(card_id=target.id)
        )
        await session.execute(delete(stamp_cards).where(stamp_cards.c.id == card.id))
        definition = (
            await session.execute(
                select(stamp_card_definitions).where(
                    stamp_card_definitions.c.id == card.definition_id
                )
            )
        ).one()
        required = int(definition.stamps_required)
        card_id, total = target.id, int(target.stamps) + int(card.stamps)
        while total >= required:
            # Free the (customer, definition) open slot before opening the overflow card.
            codes.append(await _complete(session, card_id, survivor_id, definition, now))
            await session.execute(
                update(stamp_cards).where(stamp_cards.c.id == card_id).values(stamps=required)
            )
            overflow = total - required
            following = await _open_card(session, survivor_id, definition.id, now)
            if overflow:
                await _split_overflow(session, card_id, following.id, overflow)
            card_id, total = following.id, overflow
        await session.execute(
            update(stamp_cards).where(stamp_cards.c.id == card_id).values(stamps=total)
        )
    await session.execute(
        update(stamp_cards)
        .where(stamp_cards.c.customer_id == duplicate_id)
        .values(customer_id=survivor_id)
    )
    return codes
