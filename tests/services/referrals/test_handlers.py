"""Referrals' event handlers, called directly in a transaction on a migrated database."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.referrals import codes
from services.referrals.attribution import store_fingerprints
from services.referrals.models import (
    codes as codes_table,
)
from services.referrals.models import (
    customers,
    fingerprints,
    purchases,
    referrals,
    refunds,
)
from shared.events.contacts import (
    CustomerErased,
    CustomerMerged,
    CustomerUpdated,
    ProfileSnapshot,
)
from shared.events.envelope import Event
from shared.settings import Settings
from tests.services.referrals.delivery import (
    NOW,
    again,
    buy,
    code_of,
    deliver,
    outbox,
    purchase_event,
    refer,
    referral_of,
    refund_event,
    rewards_of,
    seed_programme,
    sign_up,
    signup_event,
)

Sessions = async_sessionmaker[AsyncSession]


async def customer_row(sessions: Sessions, customer: uuid.UUID) -> Any:
    async with sessions() as session:
        return (
            await session.execute(select(customers).where(customers.c.customer_id == customer))
        ).one()


async def count(sessions: Sessions, table: Any, **where: Any) -> int:
    async with sessions() as session:
        statement = select(func.count()).select_from(table)
        for column, value in where.items():
            statement = statement.where(table.c[column] == value)
        return int((await session.execute(statement)).scalar_one())


async def owner(sessions: Sessions, code: str) -> uuid.UUID | None:
    async with sessions() as session:
        return await codes.owner_of_code(session, code, NOW, timedelta(days=90))


def merge(survivor: uuid.UUID, duplicate: uuid.UUID) -> CustomerMerged:
    return CustomerMerged(
        survivor_id=survivor,
        merged_id=duplicate,
        profile=ProfileSnapshot(email="Mei.Ling+shop@gmail.com"),
        merged_at=NOW,
    )


async def test_signup_projects_the_customer_and_gives_it_a_code(
    sessions: Sessions, settings: Settings
) -> None:
    event = signup_event(email="Mei.Ling+promo@GoogleMail.com", phone="+60 12-345 6789")
    await deliver(sessions, settings, event)
    row = await customer_row(sessions, event.customer_id)
    assert (row.status, row.email_key, row.phone_key) == (
        "active",
        "meiling@gmail.com",
        "60123456789",
    )
    assert row.signed_up_at == event.signed_up_at
    assert await owner(sessions, await code_of(sessions, event.customer_id)) == event.customer_id


async def test_an_unknown_code_at_signup_does_not_fail_the_event(
    sessions: Sessions, settings: Settings
) -> None:
    for text_given in ("ZZZZ-ZZZZ", "not a code"):
        customer = await sign_up(sessions, settings, code=text_given)
        assert (await customer_row(sessions, customer)).status == "active"
        assert await count(sessions, referrals, referee_id=customer) == 0


async def test_the_same_facts_under_new_event_ids_change_nothing(
    sessions: Sessions, settings: Settings
) -> None:
    await seed_programme(sessions)
    referrer = await sign_up(sessions, settings, at=NOW - timedelta(days=2))
    joined = signup_event(code=await code_of(sessions, referrer), at=NOW - timedelta(days=1))
    purchase = purchase_event(joined.customer_id, 6_000, NOW - timedelta(hours=1))
    refund = refund_event(purchase, 100, NOW)
    facts: list[Event] = [joined, purchase, refund]
    for event in facts:
        await deliver(sessions, settings, event)
    before = await outbox(sessions)
    referral = await referral_of(sessions, joined.customer_id)
    rewards = await rewards_of(sessions, referral.id)

    for event in [*facts, *facts]:
        await deliver(sessions, settings, again(event))

    assert await outbox(sessions) == before
    assert await referral_of(sessions, joined.customer_id) == referral
    assert await rewards_of(sessions, referral.id) == rewards
    assert await count(sessions, codes_table, customer_id=joined.customer_id) == 1
    assert await count(sessions, referrals) == 1
    assert await count(sessions, purchases) == 1
    assert await count(sessions, refunds) == 1
    async with sessions() as session:
        refunded = (
            await session.execute(
                select(purchases.c.refunded_minor).where(purchases.c.id == purchase.purchase_id)
            )
        ).scalar_one()
    assert refunded == 100


async def test_a_refund_before_its_purchase_is_counted_when_the_purchase_comes(
    sessions: Sessions, settings: Settings
) -> None:
    customer = await sign_up(sessions, settings)
    purchase = purchase_event(customer, 6_000, NOW)
    await deliver(sessions, settings, refund_event(purchase, 2_000, NOW))
    await deliver(sessions, settings, purchase)
    async with sessions() as session:
        refunded = (
            await session.execute(
                select(purchases.c.refunded_minor).where(purchases.c.id == purchase.purchase_id)
            )
        ).scalar_one()
    assert refunded == 2_000


async def test_an_update_refreshes_the_keys(sessions: Sessions, settings: Settings) -> None:
    customer = await sign_up(sessions, settings, email="old@example.com")
    await deliver(
        sessions,
        settings,
        CustomerUpdated(
            customer_id=customer,
            changed=["email", "phone"],
            profile=ProfileSnapshot(email="New@Example.com", phone="+66812345678"),
            updated_at=NOW,
        ),
    )
    row = await customer_row(sessions, customer)
    assert (row.email_key, row.phone_key) == ("new@example.com", "66812345678")


async def test_merge_moves_codes_referrals_and_purchases_once(
    sessions: Sessions, settings: Settings
) -> None:
    await seed_programme(sessions)
    survivor = await sign_up(sessions, settings, at=NOW - timedelta(days=3))
    duplicate = await sign_up(sessions, settings, at=NOW - timedelta(days=3))
    survivor_code = await code_of(sessions, survivor)
    duplicate_code = await code_of(sessions, duplicate)
    # The duplicate referred a friend, and was itself referred by someone.
    friend = await sign_up(sessions, settings, code=duplicate_code, at=NOW - timedelta(days=2))
    referrer, _ = await refer(sessions, settings, at=NOW - timedelta(days=5))
    own = await sign_up(
        sessions, settings, code=await code_of(sessions, referrer), at=NOW - timedelta(days=1)
    )
    await deliver(sessions, settings, merge(survivor, own))  # survivor had no referrer
    bought = await buy(sessions, settings, duplicate, 2_000, NOW - timedelta(hours=2))

    await deliver(sessions, settings, merge(survivor, duplicate))

    gone = await customer_row(sessions, duplicate)
    assert (gone.status, gone.merged_into) == ("merged", survivor)
    assert (await customer_row(sessions, survivor)).email_key == "meiling@gmail.com"
    # Both codes resolve to the survivor; the survivor's own stays its current one.
    assert await owner(sessions, duplicate_code) == survivor
    assert await owner(sessions, survivor_code) == survivor
    assert await code_of(sessions, survivor) == survivor_code
    assert (await referral_of(sessions, friend)).referrer_id == survivor
    # The duplicate's referral is the survivor's now, decided by the moved purchase.
    moved = await referral_of(sessions, survivor)
    assert (moved.referrer_id, moved.status) == (referrer, "unqualified")
    assert moved.purchase_id == bought.purchase_id
    assert await count(sessions, purchases, customer_id=survivor) == 1

    # Later purchases of the duplicate land on the survivor.
    await buy(sessions, settings, duplicate, 6_000, NOW - timedelta(hours=1))
    assert await count(sessions, purchases, customer_id=survivor) == 2
    assert await count(sessions, purchases, customer_id=duplicate) == 0

    snapshot = await outbox(sessions)
    await deliver(sessions, settings, merge(survivor, duplicate))  # a repeat: nothing moves
    assert await outbox(sessions) == snapshot
    assert (await referral_of(sessions, friend)).referrer_id == survivor


async def test_merge_rejects_the_duplicates_referral_when_the_survivor_has_one(
    sessions: Sessions, settings: Settings
) -> None:
    await seed_programme(sessions)
    first, survivor = await refer(sessions, settings, at=NOW - timedelta(days=2))
    second, duplicate = await refer(sessions, settings, at=NOW - timedelta(days=2))
    await deliver(sessions, settings, merge(survivor, duplicate))
    kept = await referral_of(sessions, survivor)
    rejected = await referral_of(sessions, duplicate)
    assert (kept.referrer_id, kept.status) == (first, "pending")
    assert (rejected.referrer_id, rejected.status, rejected.note) == (
        second,
        "rejected",
        f"merged into {survivor}",
    )
    assert rejected.closed_at is not None


async def test_erasure_drops_keys_codes_and_fingerprints_but_keeps_the_books(
    sessions: Sessions, settings: Settings
) -> None:
    await seed_programme(sessions)
    referrer, referee = await refer(sessions, settings, at=NOW - timedelta(days=1))
    await buy(sessions, settings, referee, 6_000, NOW)
    code = await code_of(sessions, referrer)
    async with sessions() as session, session.begin():
        await store_fingerprints(session, referrer, [("device", "d-1")], NOW)
    referral = await referral_of(sessions, referee)
    rewards = await rewards_of(sessions, referral.id)

    await deliver(sessions, settings, CustomerErased(customer_id=referrer, erased_at=NOW))

    row = await customer_row(sessions, referrer)
    assert (row.status, row.email_key, row.phone_key) == ("erased", None, None)
    assert await owner(sessions, code) is None
    assert await count(sessions, codes_table, customer_id=referrer) == 0
    assert await count(sessions, fingerprints, customer_id=referrer) == 0
    assert await referral_of(sessions, referee) == referral
    assert await rewards_of(sessions, referral.id) == rewards
    # A late copy of the signup neither brings the keys back nor issues a new code.
    await deliver(sessions, settings, signup_event(referrer, email="back@example.com", at=NOW))
    assert (await customer_row(sessions, referrer)).email_key is None
    assert await count(sessions, codes_table, customer_id=referrer) == 0
    # A signup with the erased code is not attributed.
    late = await sign_up(sessions, settings, code=code)
    assert await count(sessions, referrals, referee_id=late) == 0


async def test_erasure_of_an_unknown_customer_is_remembered(
    sessions: Sessions, settings: Settings
) -> None:
    customer = uuid.uuid4()
    await deliver(sessions, settings, CustomerErased(customer_id=customer, erased_at=NOW))
    await deliver(sessions, settings, signup_event(customer, email="a@example.com"))
    assert (await customer_row(sessions, customer)).status == "erased"
    async with sessions() as session:
        codes_left = await session.execute(
            text("SELECT count(*) FROM referrals.codes WHERE customer_id = :id"),
            {"id": customer},
        )
        assert codes_left.scalar_one() == 0
