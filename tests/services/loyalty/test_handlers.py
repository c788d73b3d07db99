"""Loyalty's event handlers, called directly in a transaction on a migrated database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.loyalty import ledger
from services.loyalty.handlers import handlers
from services.loyalty.models import members, tiers
from shared.db.engine import create_engine, session_factory
from shared.db.migrations import migrate
from shared.events.contacts import CustomerErased, CustomerMerged, ProfileSnapshot
from shared.events.envelope import Event
from shared.events.purchases import PurchaseCompleted, PurchaseRefunded
from shared.events.referrals import ReferralReversed, ReferralRewarded
from shared.settings import Settings

MIGRATIONS = Path("services/loyalty/migrations")
NOW = datetime.now(UTC)


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(database_url)
    await migrate(engine, "loyalty", MIGRATIONS)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


async def deliver(sessions: async_sessionmaker[AsyncSession], event: Event) -> None:
    """One delivery, as the consumer runner makes it: the handler in its own transaction."""
    handler = handlers(Settings())[type(event)]
    async with sessions() as session, session.begin():
        await handler(session, event, event.to_envelope(source="test"))


async def buy(
    sessions: async_sessionmaker[AsyncSession], customer: uuid.UUID, total_minor: int
) -> PurchaseCompleted:
    event = PurchaseCompleted(
        purchase_id=uuid.uuid4(),
        customer_id=customer,
        order_id=uuid.uuid4().hex,
        currency="MYR",
        total_minor=total_minor,
        purchased_at=NOW - timedelta(days=1),
    )
    await deliver(sessions, event)
    return event


async def refund(
    sessions: async_sessionmaker[AsyncSession], purchase: PurchaseCompleted, amount: int
) -> None:
    await deliver(
        sessions,
        PurchaseRefunded(
            refund_id=uuid.uuid4(),
            purchase_id=purchase.purchase_id,
            customer_id=purchase.customer_id,
            currency="MYR",
            amount_minor=amount,
            refunded_at=NOW,
        ),
    )


async def redeem(
    sessions: async_sessionmaker[AsyncSession], customer: uuid.UUID, points: int
) -> None:
    now = datetime.now(UTC)  # after the handlers' credits, so their lots are available
    async with sessions() as session, session.begin():
        await ledger.lock_member(session, customer, now)
        await ledger.debit(
            session,
            customer,
            kind="redeem",
            points=points,
            reference=f"test-redeem:{uuid.uuid4()}",
            now=now,
            available_only=True,
            allow_debt=False,
        )


async def state(sessions: async_sessionmaker[AsyncSession], customer: uuid.UUID) -> Any:
    """The member row next to its ledger sum and open lots; asserts the ledger invariants."""
    async with sessions() as session:
        row = (
            await session.execute(
                text(
                    "SELECT m.status, m.balance, m.debt, m.tier, m.merged_into, m.phone,"
                    " (SELECT coalesce(sum(points), 0) FROM loyalty.ledger l"
                    "  WHERE l.customer_id = m.customer_id) AS ledger_sum,"
                    " (SELECT coalesce(sum(remaining), 0) FROM loyalty.lots o"
                    "  WHERE o.customer_id = m.customer_id) AS remaining"
                    " FROM loyalty.members m WHERE m.customer_id = :id"
                ),
                {"id": customer},
            )
        ).one()
    assert row.balance == row.ledger_sum, row
    assert row.balance == row.remaining - row.debt, row
    return row


async def outbox_types(sessions: async_sessionmaker[AsyncSession]) -> list[str]:
    async with sessions() as session:
        rows = await session.execute(text("SELECT event_type FROM loyalty.outbox ORDER BY 1"))
        return [str(r) for (r,) in rows]


def rewarded(customer: uuid.UUID, reward_id: uuid.UUID, points: int) -> ReferralRewarded:
    return ReferralRewarded(
        reward_id=reward_id,
        referral_id=uuid.uuid4(),
        customer_id=customer,
        role="referrer",
        points=points,
        rewarded_at=NOW,
    )


def reversed_(customer: uuid.UUID, reward_id: uuid.UUID, points: int) -> ReferralReversed:
    return ReferralReversed(
        reward_id=reward_id,
        referral_id=uuid.uuid4(),
        customer_id=customer,
        points=points,
        reason="qualifying purchase refunded",
        reversed_at=NOW,
    )


def merged(survivor: uuid.UUID, duplicate: uuid.UUID, phone: str | None = None) -> CustomerMerged:
    return CustomerMerged(
        survivor_id=survivor,
        merged_id=duplicate,
        profile=ProfileSnapshot(phone=phone),
        merged_at=NOW,
    )


async def test_referral_bonus_is_credited_once_per_reward(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    customer, reward = uuid.uuid4(), uuid.uuid4()
    await deliver(sessions, rewarded(customer, reward, 200))
    await deliver(sessions, rewarded(customer, reward, 200))  # another event id, same reward
    assert (await state(sessions, customer)).balance == 200
    assert (await outbox_types(sessions)).count("points.earned") == 1
    await deliver(sessions, rewarded(customer, uuid.uuid4(), 50))
    assert (await state(sessions, customer)).balance == 250


async def test_reversal_of_a_spent_bonus_becomes_debt_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    customer, reward = uuid.uuid4(), uuid.uuid4()
    await deliver(sessions, rewarded(customer, reward, 100))
    await redeem(sessions, customer, 80)
    await deliver(sessions, reversed_(customer, reward, 100))
    await deliver(sessions, reversed_(customer, reward, 100))
    after = await state(sessions, customer)
    assert (after.balance, after.debt) == (-80, 80)
    assert (await outbox_types(sessions)).count("points.adjusted") == 1
    await buy(sessions, customer, 10_000)  # 100 points: 80 repay the debt
    after = await state(sessions, customer)
    assert (after.balance, after.debt, after.remaining) == (20, 0, 20)


async def test_merge_moves_lots_purchases_and_debt_keeping_both_ledgers_whole(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    survivor, duplicate = uuid.uuid4(), uuid.uuid4()
    async with sessions() as session, session.begin():
        common = {"basis": "spend", "threshold": 0, "window_days": 365, "created_at": NOW}
        rates = {"earn_multiplier": Decimal(1), "discount_percent": Decimal(0)}
        await session.execute(
            insert(tiers),
            [
                {"name": "silver", "rank": 1, **common, **rates},
                {"name": "gold", "rank": 2, **common, **rates},
            ],
        )
    kept = await buy(sessions, survivor, 5_000)  # survivor: a lot of 50
    spent = await buy(sessions, duplicate, 10_000)  # duplicate: 100, spent, refunded: debt
    await redeem(sessions, duplicate, 100)
    await refund(sessions, spent, 10_000)
    open_lot = await buy(sessions, duplicate, 3_000)  # 30: repays 30 of the debt
    async with sessions() as session, session.begin():
        await session.execute(
            members.update().where(members.c.customer_id == survivor).values(tier="silver")
        )
        await session.execute(
            members.update().where(members.c.customer_id == duplicate).values(tier="gold")
        )
    before = await state(sessions, duplicate)
    assert (before.balance, before.debt) == (-70, 70)

    await deliver(sessions, merged(survivor, duplicate, phone="+60128887777"))
    gone, kept_state = await state(sessions, duplicate), await state(sessions, survivor)
    assert (gone.status, gone.merged_into, gone.balance, gone.debt) == (
        "merged",
        survivor,
        0,
        0,
    )
    # 50 - 70: the survivor's lot pays the carried debt, 20 stays owed.
    assert (kept_state.balance, kept_state.debt, kept_state.remaining) == (-20, 20, 0)
    assert kept_state.tier == "gold"
    assert kept_state.phone == "+60128887777"
    async with sessions() as session:
        moved = (
            await session.execute(
                text("SELECT count(*) FROM loyalty.purchases WHERE customer_id = :id"),
                {"id": survivor},
            )
        ).scalar_one()
        assert moved == 3, [kept.purchase_id, spent.purchase_id, open_lot.purchase_id]

    # A second merged event (another id) for the same pair changes nothing.
    await deliver(sessions, merged(survivor, duplicate))
    again = await state(sessions, survivor)
    assert (again.balance, again.debt) == (-20, 20)

    # Later events for the duplicate land on the survivor.
    await buy(sessions, duplicate, 4_000)
    await deliver(sessions, rewarded(duplicate, uuid.uuid4(), 10))
    assert (await state(sessions, survivor)).balance == 30
    assert (await state(sessions, duplicate)).balance == 0

    # Erasing the survivor leaves the merge in place and no identifiers on either row.
    await deliver(sessions, CustomerErased(customer_id=survivor, erased_at=NOW))
    await deliver(sessions, CustomerErased(customer_id=duplicate, erased_at=NOW))
    gone, kept_state = await state(sessions, duplicate), await state(sessions, survivor)
    assert (gone.status, gone.phone) == ("merged", None)
    assert (kept_state.status, kept_state.phone) == ("erased", None)


async def test_merge_of_open_lots_into_a_member_in_debt(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    survivor, duplicate = sorted([uuid.uuid4(), uuid.uuid4()], reverse=True)
    spent = await buy(sessions, survivor, 10_000)
    await redeem(sessions, survivor, 100)
    await refund(sessions, spent, 4_000)  # survivor owes 40
    early = await buy(sessions, duplicate, 3_000)
    await buy(sessions, duplicate, 2_500)
    await deliver(sessions, merged(survivor, duplicate))
    kept_state = await state(sessions, survivor)
    assert (kept_state.balance, kept_state.debt, kept_state.remaining) == (15, 0, 15)
    assert kept_state.tier is None, "no tiers defined: the survivor's tier stays"
    # A refund of the duplicate's purchase now reverses on the survivor, first from its lot.
    await refund(sessions, early, 3_000)
    kept_state = await state(sessions, survivor)
    assert (kept_state.balance, kept_state.debt) == (-15, 15)
    await state(sessions, duplicate)
    async with sessions() as session:
        kinds = (
            await session.execute(
                select(func.count())
                .select_from(text("loyalty.ledger"))
                .where(text("kind IN ('merge_in', 'merge_out')"))
            )
        ).scalar_one()
    assert kinds == 2


async def test_merge_of_unknown_duplicate_and_self_merge_are_harmless(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    survivor = uuid.uuid4()
    await buy(sessions, survivor, 1_000)
    await deliver(sessions, merged(survivor, survivor))
    await deliver(sessions, merged(survivor, uuid.uuid4()))
    assert (await state(sessions, survivor)).balance == 10


def test_every_referral_and_contact_type_has_a_handler() -> None:
    table = handlers(Settings())
    for model in (ReferralRewarded, ReferralReversed, CustomerMerged, CustomerErased):
        assert model in table
