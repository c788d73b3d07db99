"""Small factories for the referrals handler tests: deliver events as the consumer would."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.referrals import programmes
from services.referrals.handlers import handlers
from services.referrals.models import codes, referrals
from services.referrals.rules import Programme
from shared.events.contacts import CustomerSignedUp, ProfileSnapshot
from shared.events.envelope import Event
from shared.events.purchases import PurchaseCompleted, PurchaseRefunded
from shared.settings import Settings

Sessions = async_sessionmaker[AsyncSession]
NOW = datetime.now(UTC)
LONG_AGO = NOW - timedelta(days=400)


async def deliver(sessions: Sessions, settings: Settings, event: Event) -> None:
    """One delivery, as the consumer runner makes it: the handler in its own transaction."""
    handler = handlers(settings)[type(event)]
    async with sessions() as session, session.begin():
        await handler(session, event, event.to_envelope(source="test"))


def again(event: Event) -> Event:
    """The same fact as a new event (a new event id, the same payload)."""
    return type(event).model_validate(event.model_dump())


async def seed_programme(sessions: Sessions, **overrides: Any) -> int:
    """Store a programme in force since long ago; answers its version."""
    values: dict[str, Any] = {
        "referrer_points": 300,
        "referee_points": 100,
        "minimum_purchase_minor": 5_000,
        "currency": "MYR",
        "qualify_within_days": 30,
    }
    values.update(overrides)
    async with sessions() as session, session.begin():
        row = await programmes.create_programme(
            session,
            starts_at=LONG_AGO,
            ends_at=None,
            rules=Programme(**values),
            created_by="test",
            now=NOW,
        )
    return int(row.version)


def signup_event(
    customer: uuid.UUID | None = None,
    *,
    code: str | None = None,
    at: datetime | None = None,
    email: str | None = None,
    phone: str | None = None,
) -> CustomerSignedUp:
    return CustomerSignedUp(
        customer_id=customer or uuid.uuid4(),
        profile=ProfileSnapshot(email=email, phone=phone),
        source="pos",
        referral_code=code,
        signed_up_at=at or NOW,
    )


async def sign_up(
    sessions: Sessions,
    settings: Settings,
    *,
    code: str | None = None,
    at: datetime | None = None,
    email: str | None = None,
) -> uuid.UUID:
    event = signup_event(code=code, at=at, email=email)
    await deliver(sessions, settings, event)
    return event.customer_id


async def code_of(sessions: Sessions, customer: uuid.UUID) -> str:
    """The customer's current code."""
    async with sessions() as session:
        return str(
            (
                await session.execute(
                    select(codes.c.code).where(
                        codes.c.customer_id == customer, codes.c.replaced_at.is_(None)
                    )
                )
            ).scalar_one()
        )


async def refer(
    sessions: Sessions, settings: Settings, *, at: datetime | None = None
) -> tuple[uuid.UUID, uuid.UUID]:
    """A referrer and a friend who signed up with its code: (referrer, referee)."""
    referrer = await sign_up(sessions, settings, at=(at or NOW) - timedelta(days=1))
    referee = await sign_up(sessions, settings, code=await code_of(sessions, referrer), at=at)
    return referrer, referee


def purchase_event(
    customer: uuid.UUID, total_minor: int, at: datetime, currency: str = "MYR"
) -> PurchaseCompleted:
    return PurchaseCompleted(
        purchase_id=uuid.uuid4(),
        customer_id=customer,
        order_id=uuid.uuid4().hex,
        currency=currency,
        total_minor=total_minor,
        purchased_at=at,
    )


async def buy(
    sessions: Sessions, settings: Settings, customer: uuid.UUID, total_minor: int, at: datetime
) -> PurchaseCompleted:
    event = purchase_event(customer, total_minor, at)
    await deliver(sessions, settings, event)
    return event


def refund_event(purchase: PurchaseCompleted, amount: int, at: datetime) -> PurchaseRefunded:
    return PurchaseRefunded(
        refund_id=uuid.uuid4(),
        purchase_id=purchase.purchase_id,
        customer_id=purchase.customer_id,
        currency=purchase.currency,
        amount_minor=amount,
        refunded_at=at,
    )


async def referral_of(sessions: Sessions, referee: uuid.UUID) -> Any:
    """The referee's referral row."""
    async with sessions() as session:
        return (
            await session.execute(select(referrals).where(referrals.c.referee_id == referee))
        ).one()


async def rewards_of(sessions: Sessions, referral_id: uuid.UUID) -> dict[str, Any]:
    """The referral's rewards by role."""
    async with sessions() as session:
        rows = await session.execute(
            text("SELECT * FROM referrals.rewards WHERE referral_id = :id"), {"id": referral_id}
        )
        return {row.role: row for row in rows}


async def outbox(sessions: Sessions, event_type: str | None = None) -> list[dict[str, Any]]:
    """The data of the events referrals queued (of one type), oldest first."""
    async with sessions() as session:
        rows = await session.execute(
            text("SELECT event_type, payload FROM referrals.outbox ORDER BY id")
        )
        return [
            dict(json.loads(row.payload)["data"])
            for row in rows
            if event_type is None or row.event_type == event_type
        ]
