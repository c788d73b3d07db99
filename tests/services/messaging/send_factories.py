"""Small async factories for the send-ledger tests: recipients and templates in the DB."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.messaging import sends as ledger_api
from services.messaging import templates
from services.messaging.models import recipients, sends


async def make_recipient(sessions: async_sessionmaker[AsyncSession], **overrides: Any) -> uuid.UUID:
    """An active, reachable recipient with email consent, unless overridden."""
    customer_id: uuid.UUID = overrides.pop("customer_id", uuid.uuid4())
    values: dict[str, Any] = {
        "customer_id": customer_id,
        "status": "active",
        "given_name": "Aisyah",
        "family_name": "Rahman",
        "email": f"{customer_id.hex[:10]}@example.my",
        "phone": "+60123456789",
        "locale": "ms-MY",
        "time_zone": "UTC",
        "consents": {"email": "granted", "sms": "granted"},
        "undeliverable": {},
        "tier": "Gold",
        "points_balance": 1250,
        "updated_at": datetime.now(UTC),
    }
    values.update(overrides)
    async with sessions.begin() as session:
        await session.execute(sa.insert(recipients).values(values))
    return customer_id


async def make_template(
    sessions: async_sessionmaker[AsyncSession],
    name: str = "promo",
    channel: str = "email",
    locale: str = "default",
    subject: str | None = "Hello {{ name }}",
    body: str = "Hi {{ name }}, you have {{ points }} points. {{ unsubscribe_url }}",
) -> None:
    async with sessions.begin() as session:
        await templates.upsert(
            session, name=name, channel=channel, locale=locale, subject=subject, body=body
        )


async def ledger(sessions: async_sessionmaker[AsyncSession]) -> list[dict[str, Any]]:
    async with sessions() as session:
        rows = await session.execute(sa.select(sends).order_by(sends.c.created_at))
        return [dict(row) for row in rows.mappings()]


async def enqueue(
    sessions: async_sessionmaker[AsyncSession],
    customer_id: uuid.UUID,
    source: str = "campaign:spring",
    **kw: Any,
) -> uuid.UUID:
    async with sessions.begin() as session:
        sid = await ledger_api.enqueue(
            session,
            source=source,
            customer_id=customer_id,
            channels=kw.pop("channels", ["email"]),
            template=kw.pop("template", "promo"),
            payload=kw.pop("payload", {"offer": {"voucher_code": "SPRING10"}}),
            not_before=kw.pop("not_before", datetime.now(UTC) - timedelta(seconds=1)),
            **kw,
        )
    assert sid is not None
    return sid
