"""Across contacts, loyalty and referrals through the transport: a friend's signup with a
code and first purchase reward both sides once, however often the events arrive, and a
refund inside the return window takes both rewards back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from services.contacts import SERVICE as CONTACTS
from services.loyalty import SERVICE as LOYALTY
from services.loyalty.handlers import handlers as loyalty_handlers
from services.referrals import SERVICE as REFERRALS
from services.referrals.handlers import handlers as referrals_handlers
from shared.auth import Scope, issue_token
from shared.db.engine import create_engine
from shared.events.envelope import EventEnvelope
from shared.http.app import create_app
from shared.pipeline.transports.base import OutgoingMessage
from shared.settings import Settings
from tests.http.app import client_for
from tests.support.broker import Broker

SECRET = "referrals-e2e-secret-long-enough-for-hs256-0123456789"
RULES = {
    "referrer_points": 300,
    "referee_points": 100,
    "minimum_purchase_minor": 5_000,
    "currency": "MYR",
    "qualify_within_days": 30,
}


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("not reached in time")
        await asyncio.sleep(0.1)


def settings_for(transport: str, database_url: str, broker: Broker | None) -> Settings:
    return Settings(
        database_url=database_url,
        jwt_secret=SECRET,
        transport=transport,
        kafka_bootstrap_servers=broker.bootstrap if broker else "unused:9092",
        kafka_session_timeout_ms=6000,
        kafka_heartbeat_interval_ms=300,
    )


def handled_types(settings: Settings) -> dict[str, set[str]]:
    """Which event types each consuming schema keeps an inbox row for."""
    return {
        "loyalty": {model.event_type for model in loyalty_handlers(settings)},
        "referrals": {model.event_type for model in referrals_handlers(settings)},
    }


@pytest.mark.parametrize("transport", ["postgres", pytest.param("kafka", marks=pytest.mark.kafka)])
async def test_a_referral_rewards_both_once_and_a_refund_takes_it_back(
    transport: str, database_url: str, request: pytest.FixtureRequest
) -> None:
    broker: Broker | None = (
        request.getfixturevalue("kafka_broker") if transport == "kafka" else None
    )
    settings = settings_for(transport, database_url, broker)
    admin = {
        "Authorization": f"Bearer {issue_token(settings, subject='boss', scopes=[Scope.ADMIN])}"
    }
    till = {
        "Authorization": "Bearer "
        + issue_token(settings, subject="till", scopes=[Scope.POS], store_id="kl-01")
    }
    engine = create_engine(database_url, pool_size=2)
    app = create_app(settings, [CONTACTS, LOYALTY, REFERRALS], run_workers=True)
    try:
        async with client_for(app) as client:
            await _scenario(client, app.state.runtime.transport, engine, settings, admin, till)
    finally:
        await engine.dispose()


async def _balance(client: httpx.AsyncClient, customer: str, headers: dict[str, str]) -> int:
    member = await client.get(f"/v1/loyalty/members/{customer}", headers=headers)
    return int(member.json()["balance"]) if member.status_code == 200 else -1


async def _scenario(
    client: httpx.AsyncClient,
    transport: Any,
    engine: Any,
    settings: Settings,
    admin: dict[str, str],
    till: dict[str, str],
) -> None:
    programme = await client.post(
        "/v1/referrals/programmes",
        json={"starts_at": (datetime.now(UTC) - timedelta(hours=1)).isoformat(), "rules": RULES},
        headers=admin,
    )
    assert programme.status_code == 201, programme.text

    signup = await client.post(
        "/v1/contacts", json={"given_name": "Aisyah", "source": "pos"}, headers=till
    )
    assert signup.status_code == 201, signup.text
    referrer = signup.json()["id"]

    async def code_issued() -> bool:
        response = await client.get(f"/v1/referrals/codes/{referrer}", headers=till)
        return response.status_code == 200

    await eventually(code_issued)
    code = (await client.get(f"/v1/referrals/codes/{referrer}", headers=till)).json()["display"]

    friend_signup = await client.post(
        "/v1/contacts",
        json={"given_name": "Mei Ling", "source": "pos", "referral_code": code},
        headers=till,
    )
    assert friend_signup.status_code == 201, friend_signup.text
    friend = friend_signup.json()["id"]

    earned: dict[str, Any] = {}

    async def bought() -> bool:
        response = await client.post(
            "/v1/loyalty/purchases",
            json={
                "customer": {"id": friend},
                "order_id": "T-100",
                "currency": "MYR",
                "total_minor": 6_000,
            },
            headers=till,
        )
        if response.status_code in (200, 201):
            earned.update(response.json())
        return response.status_code in (200, 201)

    await eventually(bought)
    friend_expected = int(earned["points"]) + 100

    async def rewarded() -> bool:
        return (
            await _balance(client, referrer, till) == 300
            and await _balance(client, friend, till) == friend_expected
        )

    await eventually(rewarded)

    # Every event again, under new event ids: the facts are the same, so nothing changes.
    resent = await _resend_everything(engine, transport)
    await _wait_until_consumed(engine, resent, handled_types(settings))
    assert await _balance(client, referrer, till) == 300
    assert await _balance(client, friend, till) == friend_expected
    async with engine.connect() as connection:
        rewards = (
            await connection.execute(text("SELECT count(*) FROM referrals.rewards"))
        ).scalar_one()
    assert rewards == 2

    refund = await client.post(
        f"/v1/loyalty/purchases/{earned['purchase_id']}/refunds",
        json={"amount_minor": 1_500},  # 4,500 kept: below the minimum
        headers=till,
    )
    assert refund.status_code == 201, refund.text
    friend_after = friend_expected - refund.json()["points_reversed"] - 100

    async def taken_back() -> bool:
        return (
            await _balance(client, referrer, till) == 0
            and await _balance(client, friend, till) == friend_after
        )

    await eventually(taken_back)


async def _resend_everything(engine: Any, transport: Any) -> list[EventEnvelope]:
    """Publish a copy of every event so far with a new id (contacts, purchases, referrals)."""
    async with engine.connect() as connection:
        rows = (
            await connection.execute(
                text(
                    "SELECT topic, key, payload FROM contacts.outbox"
                    " UNION ALL SELECT topic, key, payload FROM loyalty.outbox"
                    "  WHERE topic = 'crm.purchases'"
                    " UNION ALL SELECT topic, key, payload FROM referrals.outbox"
                )
            )
        ).all()
    copies: list[EventEnvelope] = []
    messages: list[OutgoingMessage] = []
    for row in rows:
        envelope = EventEnvelope.model_validate_json(row.payload).model_copy(
            update={"id": uuid.uuid4()}
        )
        copies.append(envelope)
        messages.append(OutgoingMessage(row.topic, row.key, envelope.model_dump_json().encode()))
    assert {c.type for c in copies} >= {
        "customer.signed_up",
        "purchase.completed",
        "referral.rewarded",
    }
    await transport.publish(messages)
    return copies


async def _wait_until_consumed(
    engine: Any, copies: list[EventEnvelope], handled: dict[str, set[str]]
) -> None:
    """Until every copy has its inbox row in each service that handles its type."""
    expected = {
        (schema, copy.id)
        for copy in copies
        for schema, types in handled.items()
        if copy.type in types
    }

    async def consumed() -> bool:
        async with engine.connect() as connection:
            seen = set()
            for schema in handled:
                rows = await connection.execute(
                    text(f"SELECT event_id FROM {schema}.inbox WHERE outcome = 'applied'")
                )
                seen |= {(schema, event_id) for (event_id,) in rows}
        return expected <= seen

    await eventually(consumed)
    await asyncio.sleep(0.5)  # and whatever those handlers might have queued
