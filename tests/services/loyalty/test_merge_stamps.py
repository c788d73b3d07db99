"""`customer.merged` moves stamp cards: open cards of one definition are folded together."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.loyalty.models import stamp_card_definitions
from shared.events.purchases import PurchaseCompleted, PurchaseLine, PurchaseRefunded
from tests.services.loyalty.test_handlers import NOW, deliver, merged, sessions

__all__ = ["sessions"]  # the fixture, used below


async def define(sessions: async_sessionmaker[AsyncSession], sku: str, required: int) -> uuid.UUID:
    definition_id = uuid.uuid4()
    async with sessions() as session, session.begin():
        await session.execute(
            insert(stamp_card_definitions).values(
                id=definition_id,
                name=f"{sku} card",
                skus=[sku],
                categories=[],
                stamps_required=required,
                reward_description=f"One free {sku}",
                voucher_valid_days=30,
                active=True,
                created_at=datetime.now(UTC),
            )
        )
    return definition_id


async def buy(
    sessions: async_sessionmaker[AsyncSession], customer: uuid.UUID, sku: str, quantity: int
) -> PurchaseCompleted:
    event = PurchaseCompleted(
        purchase_id=uuid.uuid4(),
        customer_id=customer,
        order_id=uuid.uuid4().hex,
        currency="MYR",
        total_minor=500 * quantity,
        lines=[PurchaseLine(sku=sku, category=None, quantity=quantity, unit_price_minor=500)],
        purchased_at=NOW,
    )
    await deliver(sessions, event)
    return event


async def refund_all(
    sessions: async_sessionmaker[AsyncSession], purchase: PurchaseCompleted
) -> uuid.UUID:
    refund_id = uuid.uuid4()
    await deliver(
        sessions,
        PurchaseRefunded(
            refund_id=refund_id,
            purchase_id=purchase.purchase_id,
            customer_id=purchase.customer_id,
            currency="MYR",
            amount_minor=purchase.total_minor,
            refunded_at=NOW,
        ),
    )
    return refund_id


async def cards(sessions: async_sessionmaker[AsyncSession], customer: uuid.UUID) -> list[Any]:
    """(definition, stamps, voucher) per card, open first; checks entries match stamps."""
    async with sessions() as session:
        rows = (
            await session.execute(
                text(
                    "SELECT c.definition_id, c.stamps, c.voucher_code,"
                    " (SELECT coalesce(sum(e.stamps), 0) FROM loyalty.stamp_entries e"
                    "  WHERE e.card_id = c.id) AS entries"
                    " FROM loyalty.stamp_cards c WHERE c.customer_id = :c"
                    " ORDER BY c.completed_at NULLS FIRST, c.created_at, c.voucher_code"
                ),
                {"c": customer},
            )
        ).all()
    for row in rows:
        assert row.stamps == row.entries, row
    return [(row.definition_id, row.stamps, row.voucher_code) for row in rows]


async def scalar(sessions: async_sessionmaker[AsyncSession], sql: str, **params: Any) -> Any:
    async with sessions() as session:
        return (await session.execute(text(sql), params)).scalar_one()


async def vouchers_announced(
    sessions: async_sessionmaker[AsyncSession], kind: str, customer: uuid.UUID
) -> list[str]:
    async with sessions() as session:
        rows = await session.execute(
            text("SELECT payload FROM loyalty.outbox WHERE event_type = :t AND key = :k"),
            {"t": kind, "k": str(customer)},
        )
        return sorted(json.loads(payload)["data"]["voucher_code"] for (payload,) in rows)


async def test_open_cards_combine_complete_and_carry_over(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    coffee = await define(sessions, "LATTE", 3)
    muffin = await define(sessions, "MUFFIN", 5)
    survivor, duplicate = uuid.uuid4(), uuid.uuid4()
    await buy(sessions, survivor, "LATTE", 2)
    completing = await buy(sessions, duplicate, "LATTE", 3)  # a completed card of its own
    open_dup = await buy(sessions, duplicate, "LATTE", 2)
    await buy(sessions, duplicate, "MUFFIN", 1)  # the survivor has no muffin card
    [(_, _, old_code)] = [c for c in await cards(sessions, duplicate) if c[2] is not None]
    before = await vouchers_announced(sessions, "reward.issued", survivor)
    assert before == []

    await deliver(sessions, merged(survivor, duplicate))

    assert await cards(sessions, duplicate) == []
    held = await cards(sessions, survivor)
    open_cards = [(d, s) for d, s, code in held if code is None]
    assert sorted(open_cards) == sorted([(coffee, 1), (muffin, 1)]), "2 + 2 of 3: 1 carried"
    completed = [(d, s, code) for d, s, code in held if code is not None]
    assert len(completed) == 2 and all((d, s) == (coffee, 3) for d, s, _ in completed)
    [new_code] = [code for _, _, code in completed if code != old_code]
    assert new_code.startswith("ST-")
    assert await vouchers_announced(sessions, "stamp_card.completed", survivor) == [new_code]
    assert await vouchers_announced(sessions, "reward.issued", survivor) == [new_code]
    # The emptied duplicate card is gone; every entry points at a card of the survivor.
    assert (
        await scalar(
            sessions,
            "SELECT count(*) FROM loyalty.stamp_entries e LEFT JOIN loyalty.stamp_cards c"
            " ON c.id = e.card_id WHERE c.id IS NULL OR c.customer_id <> :s",
            s=survivor,
        )
        == 0
    )
    assert (
        await scalar(
            sessions,
            "SELECT sum(stamps) FROM loyalty.stamp_entries WHERE purchase_id = :p",
            p=open_dup.purchase_id,
        )
        == 2
    ), "the purchase's entries were split, not lost"

    # A redelivered merge changes nothing.
    await deliver(sessions, merged(survivor, duplicate))
    assert await cards(sessions, survivor) == held
    assert await vouchers_announced(sessions, "reward.issued", survivor) == [new_code]

    # Refunds still find the stamps: the open card gives back what it holds, never below 0.
    refund_id = await refund_all(sessions, open_dup)
    taken = await scalar(
        sessions,
        "SELECT -sum(stamps) FROM loyalty.stamp_entries WHERE refund_id = :r",
        r=refund_id,
    )
    assert taken == 1
    after = await cards(sessions, survivor)
    assert sorted((d, s) for d, s, code in after if code is None) == sorted(
        [(coffee, 0), (muffin, 1)]
    )
    refund_id = await refund_all(sessions, completing)
    assert (
        await scalar(
            sessions,
            "SELECT -sum(stamps) FROM loyalty.stamp_entries WHERE refund_id = :r",
            r=refund_id,
        )
        == 0
    ), "stamps in completed cards are not taken back"


async def test_open_cards_combine_below_the_target(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    coffee = await define(sessions, "LATTE", 5)
    survivor, duplicate = uuid.uuid4(), uuid.uuid4()
    await buy(sessions, survivor, "LATTE", 1)
    theirs = await buy(sessions, duplicate, "LATTE", 2)
    await deliver(sessions, merged(survivor, duplicate))
    assert await cards(sessions, survivor) == [(coffee, 3, None)]
    assert await cards(sessions, duplicate) == []
    assert await vouchers_announced(sessions, "stamp_card.completed", survivor) == []
    # Purchases after the merge stamp the same (survivor's) open card.
    await buy(sessions, survivor, "LATTE", 1)
    assert await cards(sessions, survivor) == [(coffee, 4, None)]
    refund_id = await refund_all(sessions, theirs)
    assert (
        await scalar(
            sessions,
            "SELECT -sum(stamps) FROM loyalty.stamp_entries WHERE refund_id = :r",
            r=refund_id,
        )
        == 2
    )
    assert await cards(sessions, survivor) == [(coffee, 2, None)]


async def test_only_the_duplicate_has_cards(sessions: async_sessionmaker[AsyncSession]) -> None:
    coffee = await define(sessions, "LATTE", 3)
    survivor, duplicate = uuid.uuid4(), uuid.uuid4()
    await buy(sessions, survivor, "TEA", 1)  # a member without cards
    await buy(sessions, duplicate, "LATTE", 4)
    held = await cards(sessions, duplicate)
    await deliver(sessions, merged(survivor, duplicate))
    assert await cards(sessions, survivor) == held
    assert [(d, s) for d, s, _ in held] == [(coffee, 1), (coffee, 3)]
    assert await vouchers_announced(sessions, "reward.issued", survivor) == []
