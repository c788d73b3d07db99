"""The GDPR export: everything messaging holds about a customer, merged duplicates included."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.messaging.models import survey_responses, surveys
from shared.events.scoring import SegmentEntered
from shared.settings import Settings
from tests.services.messaging.test_conversions import buy
from tests.services.messaging.test_handlers import add_send, merged
from tests.services.messaging.test_recipients import T0, deliver, signup

Sessions = async_sessionmaker[AsyncSession]


async def test_export_gathers_recipient_sends_conversions_surveys_and_segments(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    reader: dict[str, str],
    sessions: Sessions,
    settings: Settings,
) -> None:
    customer, duplicate, segment, survey = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await deliver(sessions, settings, signup(customer))
    await deliver(sessions, settings, signup(duplicate, email="dup@example.my"))
    await deliver(
        sessions,
        settings,
        SegmentEntered(customer_id=customer, segment_id=segment, segment_name="VIP", entered_at=T0),
    )
    old_send = await add_send(sessions, duplicate, "trigger:welcome", "sent", sent_at=T0)
    own_send = await add_send(sessions, customer, "campaign:x", "queued")
    await deliver(sessions, settings, merged(customer, duplicate, T0 + timedelta(hours=1)))
    purchase = await buy(sessions, settings, customer, T0 + timedelta(days=1))
    async with sessions() as session, session.begin():
        await session.execute(
            insert(surveys).values(id=survey, name="NPS", kind="nps", questions=[], created_at=T0)
        )
        await session.execute(
            insert(survey_responses).values(
                id=uuid.uuid4(),
                survey_id=survey,
                customer_id=duplicate,
                send_id=old_send,
                score=9,
                answers={"comment": "great"},
                answered_at=T0,
            )
        )

    denied = await client.get(f"/v1/messaging/customers/{customer}/export", headers=reader)
    assert denied.status_code == 403, denied.text
    response = await client.get(f"/v1/messaging/customers/{customer}/export", headers=admin)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["customer_id"] == str(customer)
    assert body["recipient"]["email"] == "merged@example.my"  # the merged profile
    assert [r["customer_id"] for r in body["merged_recipients"]] == [str(duplicate)]
    assert {s["id"] for s in body["sends"]} == {str(old_send), str(own_send)}
    assert [c["purchase_id"] for c in body["conversions"]] == [str(purchase.purchase_id)]
    assert body["conversions"][0]["send_id"] == str(old_send)
    assert [r["score"] for r in body["survey_responses"]] == [9]
    assert [m["segment_id"] for m in body["segment_memberships"]] == [str(segment)]


async def test_export_of_an_unknown_customer_is_empty(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    customer = uuid.uuid4()
    response = await client.get(f"/v1/messaging/customers/{customer}/export", headers=admin)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["recipient"] is None
    assert body["sends"] == body["conversions"] == body["merged_recipients"] == []
