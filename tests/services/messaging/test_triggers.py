"""Journeys from events: each queues one send per occurrence, only when switched on."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.messaging import surveys, triggers
from services.messaging.models import recipients, sends, templates
from shared.events.contacts import (
    ConsentChanged,
    ConsentConfirmationRequested,
    CustomerSignedUp,
    ProfileSnapshot,
)
from shared.events.envelope import Event
from shared.events.loyalty import PointsExpiring, TierChanged
from shared.events.purchases import PurchaseCompleted
from shared.events.referrals import ReferralRewarded
from shared.events.scoring import CustomerScored
from shared.settings import Settings

Sessions = async_sessionmaker[AsyncSession]
NOW = datetime(2027, 3, 10, 4, 0, tzinfo=UTC)
TRIGGERS = "/v1/messaging/triggers"


async def make_recipient(sessions: Sessions, **overrides: Any) -> uuid.UUID:
    """An active recipient with an email address and email consent, unless overridden."""
    values: dict[str, Any] = {
        "customer_id": uuid.uuid4(),
        "status": "active",
        "given_name": "Aisyah",
        "email": "aisyah@example.com",
        "phone": "+60123456789",
        "locale": "ms-MY",
        "time_zone": "Asia/Kuala_Lumpur",
        "consents": {"email": "granted"},
        "undeliverable": {},
        "signed_up_at": NOW - timedelta(minutes=5),
        "updated_at": NOW,
    } | overrides
    async with sessions() as session, session.begin():
        await session.execute(recipients.insert().values(**values))
    return uuid.UUID(str(values["customer_id"]))


async def make_template(sessions: Sessions, name: str, channel: str = "email") -> None:
    async with sessions() as session, session.begin():
        await session.execute(
            templates.insert().values(
                id=uuid.uuid4(),
                name=name,
                channel=channel,
                locale="en",
                subject="Hello {{ given_name }}",
                body="Hello",
                created_at=NOW,
                updated_at=NOW,
            )
        )


async def enable(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    sessions: Sessions,
    name: str,
    **body: Any,
) -> dict[str, Any]:
    """Switch a journey on through the API (with a template of its name)."""
    await make_template(sessions, body.get("template") or name)
    response = await client.put(f"{TRIGGERS}/{name}", json={"enabled": True} | body, headers=admin)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def fire(sessions: Sessions, settings: Settings, event: Event, now: datetime = NOW) -> None:
    async with sessions() as session, session.begin():
        await triggers.on_event(session, event, now=now, settings=settings)


async def sends_of(sessions: Sessions, customer: uuid.UUID) -> list[Any]:
    async with sessions() as session:
        rows = await session.execute(
            select(sends).where(sends.c.customer_id == customer).order_by(sends.c.created_at)
        )
        return list(rows.all())


def signed_up(customer: uuid.UUID) -> CustomerSignedUp:
    return CustomerSignedUp(
        customer_id=customer,
        profile=ProfileSnapshot(email="aisyah@example.com"),
        source="pos",
        signed_up_at=NOW - timedelta(minutes=5),
    )


async def test_journeys_are_off_until_switched_on(
    client: httpx.AsyncClient, reader: dict[str, str], sessions: Sessions, settings: Settings
) -> None:
    listed = await client.get(TRIGGERS, headers=reader)
    assert listed.status_code == 200
    assert {t["name"]: t["enabled"] for t in listed.json()} == {
        name: False for name in triggers.JOURNEYS
    }
    customer = await make_recipient(sessions)
    await fire(sessions, settings, signed_up(customer))
    await fire(
        sessions,
        settings,
        TierChanged(
            customer_id=customer,
            previous_tier="silver",
            tier="gold",
            direction="up",
            changed_at=NOW,
        ),
    )
    assert await sends_of(sessions, customer) == []


async def test_welcome_once_after_signup_with_delay(
    client: httpx.AsyncClient, admin: dict[str, str], sessions: Sessions, settings: Settings
) -> None:
    await enable(client, admin, sessions, "welcome", delay_seconds=600)
    customer = await make_recipient(sessions)
    await fire(sessions, settings, signed_up(customer))
    await fire(sessions, settings, signed_up(customer))  # redelivered
    granted = ConsentChanged(
        customer_id=customer, channel="sms", status="granted", source="pos", changed_at=NOW
    )
    await fire(sessions, settings, granted)
    [send] = await sends_of(sessions, customer)
    assert (send.source, send.channel, send.status) == ("trigger:welcome", "email", "queued")
    assert send.not_before == NOW + timedelta(seconds=600)


async def test_welcome_waits_for_the_first_consent(
    client: httpx.AsyncClient, admin: dict[str, str], sessions: Sessions, settings: Settings
) -> None:
    await enable(client, admin, sessions, "welcome")
    customer = await make_recipient(sessions, consents={})
    await fire(sessions, settings, signed_up(customer))
    assert await sends_of(sessions, customer) == []
    async with sessions() as session, session.begin():
        await session.execute(
            update(recipients)
            .where(recipients.c.customer_id == customer)
            .values(consents={"email": "granted"})
        )
    granted = ConsentChanged(
        customer_id=customer, channel="email", status="granted", source="web", changed_at=NOW
    )
    await fire(sessions, settings, granted)
    await fire(sessions, settings, granted)
    [send] = await sends_of(sessions, customer)
    assert (send.source, send.status) == ("trigger:welcome", "queued")
    # A consent given long after signup is not a welcome any more.
    late = await make_recipient(
        sessions, consents={"email": "granted"}, signed_up_at=NOW - timedelta(days=60)
    )
    await fire(sessions, settings, granted.model_copy(update={"customer_id": late}))
    assert await sends_of(sessions, late) == []


async def test_tier_upgrade_once_per_tier_and_year(
    client: httpx.AsyncClient, admin: dict[str, str], sessions: Sessions, settings: Settings
) -> None:
    await enable(client, admin, sessions, "tier_upgraded", offer={"kind": "content"})
    customer = await make_recipient(sessions)
    up = TierChanged(
        customer_id=customer, previous_tier="silver", tier="gold", direction="up", changed_at=NOW
    )
    down = up.model_copy(update={"previous_tier": "gold", "tier": "silver", "direction": "down"})
    for event in (up, up, down):
        await fire(sessions, settings, event)
    [send] = await sends_of(sessions, customer)
    assert send.source == "trigger:tier:gold:2027"
    assert send.payload["data"]["tier"] == "gold"
    assert send.payload["data"]["previous_tier"] == "silver"
    assert send.payload["data"]["offer"] == {"kind": "content"}
    assert send.not_before == NOW


async def test_points_expiring_keyed_by_local_expiry_date(
    client: httpx.AsyncClient, admin: dict[str, str], sessions: Sessions, settings: Settings
) -> None:
    await enable(client, admin, sessions, "points_expiring", options={"min_points": 50})
    customer = await make_recipient(sessions)
    # 16:00 UTC on 31 March is midnight starting 1 April in Kuala Lumpur.
    expiring = PointsExpiring(
        customer_id=customer, points=120, expires_at=datetime(2027, 3, 31, 16, tzinfo=UTC)
    )
    await fire(sessions, settings, expiring)
    await fire(sessions, settings, expiring)
    await fire(sessions, settings, expiring.model_copy(update={"points": 10, "expires_at": NOW}))
    [send] = await sends_of(sessions, customer)
    assert send.source == "trigger:expiring:2027-04-01"
    assert send.payload["data"]["points"] == 120


async def test_referral_rewarded(
    client: httpx.AsyncClient, admin: dict[str, str], sessions: Sessions, settings: Settings
) -> None:
    await enable(client, admin, sessions, "referral_rewarded")
    customer = await make_recipient(sessions)
    rewarded = ReferralRewarded(
        reward_id=uuid.uuid4(),
        referral_id=uuid.uuid4(),
        customer_id=customer,
        role="referrer",
        points=200,
        rewarded_at=NOW,
    )
    await fire(sessions, settings, rewarded)
    await fire(sessions, settings, rewarded)
    [send] = await sends_of(sessions, customer)
    assert send.source == f"trigger:referral:{rewarded.reward_id}"
    assert send.payload["data"] == {"points": 200, "role": "referrer"}


def scored(customer: uuid.UUID, previous: str | None, band: str, at: datetime) -> CustomerScored:
    return CustomerScored(
        customer_id=customer,
        churn_risk=0.8,
        churn_band=band,
        previous_churn_band=previous,
        clv=120.0,
        expected_purchases=0.3,
        scored_at=at,
    )


async def test_win_back_on_crossing_into_the_band_with_cooldown(
    client: httpx.AsyncClient, admin: dict[str, str], sessions: Sessions, settings: Settings
) -> None:
    await enable(client, admin, sessions, "win_back", options={"cooldown_days": 30})
    customer = await make_recipient(sessions)
    await fire(sessions, settings, scored(customer, "low", "medium", NOW))
    await fire(sessions, settings, scored(customer, "medium", "high", NOW))
    await fire(sessions, settings, scored(customer, "high", "high", NOW + timedelta(days=1)))
    later = NOW + timedelta(days=10)
    await fire(sessions, settings, scored(customer, "medium", "high", later), later)
    assert [s.source for s in await sends_of(sessions, customer)] == ["trigger:win_back:2027-03-10"]
    # After the cooldown, a new crossing starts the journey again.
    much_later = NOW + timedelta(days=40)
    await fire(sessions, settings, scored(customer, "medium", "high", much_later), much_later)
    assert len(await sends_of(sessions, customer)) == 2


async def test_post_purchase_survey_carries_a_signed_link(
    client: httpx.AsyncClient, admin: dict[str, str], sessions: Sessions, settings: Settings
) -> None:
    created = await client.post(
        "/v1/messaging/surveys", json={"name": "After your visit", "kind": "nps"}, headers=admin
    )
    survey_id = created.json()["id"]
    refused = await client.put(
        f"{TRIGGERS}/post_purchase_survey", json={"enabled": True}, headers=admin
    )
    assert refused.status_code == 422
    await enable(client, admin, sessions, "post_purchase_survey", options={"survey_id": survey_id})
    customer = await make_recipient(sessions)
    purchase = PurchaseCompleted(
        purchase_id=uuid.uuid4(),
        customer_id=customer,
        order_id="O-1",
        currency="MYR",
        total_minor=5000,
        purchased_at=NOW,
    )
    await fire(sessions, settings, purchase)
    await fire(sessions, settings, purchase)
    another = purchase.model_copy(update={"purchase_id": uuid.uuid4()})
    await fire(sessions, settings, another)  # within the cooldown: not surveyed again
    [send] = await sends_of(sessions, customer)
    assert send.source == f"trigger:survey:{purchase.purchase_id}"
    assert send.not_before == NOW + timedelta(days=1)
    url: str = send.payload["data"]["survey_url"]
    token = url.split("token=")[1]
    link = surveys.verify_token(settings, uuid.UUID(survey_id), token)
    assert (link.customer_id, link.send_id) == (customer, send.id)
    answered = await client.post(
        f"/v1/messaging/surveys/{survey_id}/answer",
        params={"token": token},
        json={"answers": {"nps": 10}},
    )
    assert answered.status_code == 201, answered.text


async def test_double_opt_in_is_always_sent_and_transactional(
    sessions: Sessions, settings: Settings
) -> None:
    customer = await make_recipient(sessions, consents={"email": "pending"})
    requested = ConsentConfirmationRequested(
        customer_id=customer,
        channel="email",
        address="aisyah@example.com",
        confirmation_token="tok-1",
        confirm_url="https://shop.example/v1/contacts/consents/confirm?token=tok-1",
        requested_at=NOW,
    )
    await fire(sessions, settings, requested)
    await fire(sessions, settings, requested)
    [send] = await sends_of(sessions, customer)
    assert (send.channel, send.status) == ("email", "queued")
    assert send.payload["data"]["confirm_url"] == requested.confirm_url
    assert send.source.startswith("trigger:confirm:email:")
    # A new request carries a new link, hence a new message.
    await fire(sessions, settings, requested.model_copy(update={"confirmation_token": "tok-2"}))
    assert len(await sends_of(sessions, customer)) == 2


async def test_merged_or_unknown_customers_get_nothing(
    client: httpx.AsyncClient, admin: dict[str, str], sessions: Sessions, settings: Settings
) -> None:
    await enable(client, admin, sessions, "referral_rewarded")
    merged = await make_recipient(sessions, status="merged")
    for customer in (merged, uuid.uuid4()):
        await fire(
            sessions,
            settings,
            ReferralRewarded(
                reward_id=uuid.uuid4(),
                referral_id=uuid.uuid4(),
                customer_id=customer,
                role="referee",
                points=50,
                rewarded_at=NOW,
            ),
        )
        assert await sends_of(sessions, customer) == []


async def test_trigger_settings_are_validated(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    reader: dict[str, str],
    sessions: Sessions,
) -> None:
    assert (
        await client.put(f"{TRIGGERS}/nope", json={"enabled": False}, headers=admin)
    ).status_code == 404
    assert (
        await client.put(f"{TRIGGERS}/welcome", json={"enabled": False}, headers=reader)
    ).status_code == 403
    cases: list[tuple[dict[str, Any], str]] = [
        ({"enabled": True}, "template"),
        ({"enabled": False, "options": {"colour": "red"}}, "options.colour"),
        ({"enabled": False, "options": {"channels": ["pigeon"]}}, "options.channels"),
        ({"enabled": False, "options": {"hour": 25}}, "options.hour"),
        ({"enabled": False, "delay_seconds": -1}, "delay_seconds"),
    ]
    for body, field in cases:
        name = "birthday" if "hour" in body.get("options", {}) else "welcome"
        response = await client.put(f"{TRIGGERS}/{name}", json=body, headers=admin)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert field in response.text
    listed = await client.get(TRIGGERS, headers=reader)
    assert all(not t["enabled"] and t["updated_at"] is None for t in listed.json())
    saved = await enable(client, admin, sessions, "birthday", options={"hour": 10}, delay_seconds=0)
    assert saved["options"] == {"hour": 10}
    switched_off = await client.put(f"{TRIGGERS}/birthday", json={"enabled": False}, headers=admin)
    assert switched_off.json()["enabled"] is False
    one = await client.get(f"{TRIGGERS}/birthday", headers=reader)
    assert one.json()["template"] == "birthday"
