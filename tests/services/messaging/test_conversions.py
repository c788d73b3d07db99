"""Purchases attributed to the last message sent within its attribution window."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.messaging.models import campaigns, conversions
from shared.events.purchases import PurchaseCompleted, PurchaseRefunded
from shared.settings import Settings
from tests.services.messaging.test_handlers import add_send, merged
from tests.services.messaging.test_recipients import T0, deliver, signup

Sessions = async_sessionmaker[AsyncSession]


async def add_campaign(sessions: Sessions, attribution_days: int) -> str:
    campaign_id = uuid.uuid4()
    async with sessions() as session, session.begin():
        await session.execute(
            insert(campaigns).values(
                id=campaign_id,
                name="Raya promo",
                status="running",
                audience={},
                channels=["email"],
                template="raya",
                schedule={},
                attribution_days=attribution_days,
                created_at=T0,
                updated_at=T0,
            )
        )
    return f"campaign:{campaign_id}"


async def buy(
    sessions: Sessions, settings: Settings, customer: uuid.UUID, at: datetime, total: int = 5_000
) -> PurchaseCompleted:
    event = PurchaseCompleted(
        purchase_id=uuid.uuid4(),
        customer_id=customer,
        order_id=uuid.uuid4().hex,
        currency="MYR",
        total_minor=total,
        purchased_at=at,
    )
    await deliver(sessions, settings, event)
    return event


async def conversion(sessions: Sessions, purchase: PurchaseCompleted) -> Any:
    async with sessions() as session:
        return (
            await session.execute(
                select(conversions).where(conversions.c.purchase_id == purchase.purchase_id)
            )
        ).one()


async def test_a_purchase_inside_the_campaign_window_converts_the_latest_send(
    sessions: Sessions, settings: Settings
) -> None:
    customer = uuid.uuid4()
    await deliver(sessions, settings, signup(customer))
    campaign = await add_campaign(sessions, attribution_days=3)
    await add_send(sessions, customer, "trigger:welcome", "delivered", sent_at=T0)
    latest = await add_send(sessions, customer, campaign, "sent", sent_at=T0 + timedelta(days=1))
    await add_send(sessions, customer, "campaign:other", "failed", sent_at=T0 + timedelta(days=2))
    purchase = await buy(sessions, settings, customer, T0 + timedelta(days=3))
    await deliver(sessions, settings, purchase)  # a redelivery stores nothing twice

    got = await conversion(sessions, purchase)
    assert (got.send_id, got.customer_id, got.currency, got.total_minor) == (
        latest,
        customer,
        "MYR",
        5_000,
    )
    async with sessions() as session:
        count = len((await session.execute(select(conversions))).all())
    assert count == 1


async def test_outside_every_window_the_purchase_is_kept_unattributed(
    sessions: Sessions, settings: Settings
) -> None:
    customer = uuid.uuid4()
    campaign = await add_campaign(sessions, attribution_days=2)
    await add_send(sessions, customer, campaign, "delivered", sent_at=T0)
    # The trigger default (settings.messaging_attribution_days = 7) has run out too.
    await add_send(sessions, customer, "trigger:welcome", "sent", sent_at=T0 - timedelta(days=8))
    purchase = await buy(sessions, settings, customer, T0 + timedelta(days=2, seconds=1))
    assert (await conversion(sessions, purchase)).send_id is None


async def test_a_longer_window_of_an_older_send_still_attributes(
    sessions: Sessions, settings: Settings
) -> None:
    customer = uuid.uuid4()
    short = await add_campaign(sessions, attribution_days=1)
    await add_send(sessions, customer, short, "sent", sent_at=T0 + timedelta(days=3))
    trigger = await add_send(sessions, customer, "trigger:tier:gold:2026", "sent", sent_at=T0)
    purchase = await buy(sessions, settings, customer, T0 + timedelta(days=6))
    assert (await conversion(sessions, purchase)).send_id == trigger


async def test_sends_after_the_purchase_do_not_convert_it(
    sessions: Sessions, settings: Settings
) -> None:
    customer = uuid.uuid4()
    await add_send(sessions, customer, "trigger:welcome", "sent", sent_at=T0 + timedelta(hours=1))
    purchase = await buy(sessions, settings, customer, T0)
    assert (await conversion(sessions, purchase)).send_id is None


async def test_a_message_to_a_merged_duplicate_converts_for_the_survivor(
    sessions: Sessions, settings: Settings
) -> None:
    survivor, duplicate = uuid.uuid4(), uuid.uuid4()
    await deliver(sessions, settings, signup(survivor))
    await deliver(sessions, settings, signup(duplicate))
    send = await add_send(sessions, duplicate, "trigger:welcome", "sent", sent_at=T0)
    await deliver(sessions, settings, merged(survivor, duplicate, T0 + timedelta(hours=1)))
    purchase = await buy(sessions, settings, duplicate, T0 + timedelta(days=1))
    got = await conversion(sessions, purchase)
    assert (got.customer_id, got.send_id) == (survivor, send)


async def test_refunds_are_netted_out_of_revenue_once(
    sessions: Sessions, settings: Settings
) -> None:
    customer = uuid.uuid4()
    purchase = await buy(sessions, settings, customer, T0, total=5_000)
    refund = PurchaseRefunded(
        refund_id=uuid.uuid4(),
        purchase_id=purchase.purchase_id,
        customer_id=customer,
        currency="MYR",
        amount_minor=1_500,
        refunded_at=T0 + timedelta(days=1),
    )
    await deliver(sessions, settings, refund)
    await deliver(sessions, settings, refund)  # a redelivery counts once
    assert (await conversion(sessions, purchase)).refunded_minor == 1_500
    too_much = refund.model_copy(update={"refund_id": uuid.uuid4(), "amount_minor": 9_000})
    await deliver(sessions, settings, too_much)
    assert (await conversion(sessions, purchase)).refunded_minor == 5_000  # never beyond


async def test_a_refund_before_its_purchase_counts_when_the_purchase_arrives(
    sessions: Sessions, settings: Settings
) -> None:
    customer = uuid.uuid4()
    purchase_id = uuid.uuid4()
    await deliver(
        sessions,
        settings,
        PurchaseRefunded(
            refund_id=uuid.uuid4(),
            purchase_id=purchase_id,
            customer_id=customer,
            currency="MYR",
            amount_minor=700,
            refunded_at=T0,
        ),
    )
    purchase = PurchaseCompleted(
        purchase_id=purchase_id,
        customer_id=customer,
        order_id="late-1",
        currency="MYR",
        total_minor=2_000,
        purchased_at=T0,
    )
    await deliver(sessions, settings, purchase)
    assert (await conversion(sessions, purchase)).refunded_minor == 700
