"""Across services through the transport: contacts' signup feeds loyalty's projection, and a
purchase an outside system publishes on `crm.purchases` earns points like a till's."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaProducer

from services.contacts import SERVICE as CONTACTS
from services.loyalty import SERVICE as LOYALTY
from shared.auth import Scope, issue_token
from shared.events.purchases import PurchaseCompleted
from shared.http.app import create_app
from shared.pipeline.transports.base import OutgoingMessage
from shared.settings import Settings
from tests.http.app import client_for
from tests.support.broker import Broker

SECRET = "loyalty-e2e-secret-long-enough-for-hs256-0123456789"


async def eventually(check: object, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if await check():  # type: ignore[operator]
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("not reached in time")
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("transport", ["postgres", pytest.param("kafka", marks=pytest.mark.kafka)])
async def test_signup_then_outside_purchase_earns_points(
    transport: str, database_url: str, request: pytest.FixtureRequest
) -> None:
    broker: Broker | None = (
        request.getfixturevalue("kafka_broker") if transport == "kafka" else None
    )
    settings = Settings(
        database_url=database_url,
        jwt_secret=SECRET,  # type: ignore[arg-type]
        transport=transport,  # type: ignore[arg-type]
        kafka_bootstrap_servers=broker.bootstrap if broker else "unused:9092",
        kafka_session_timeout_ms=6000,
        kafka_heartbeat_interval_ms=300,
    )
    token = issue_token(settings, subject="till", scopes=[Scope.POS], store_id="kl-01")
    headers = {"Authorization": f"Bearer {token}"}
    app = create_app(settings, [CONTACTS, LOYALTY], run_workers=True)
    async with client_for(app) as client:
        signup = await client.post(
            "/v1/contacts",
            json={"given_name": "Mei Ling", "phone": "012-888 7777", "source": "pos"},
            headers=headers,
        )
        assert signup.status_code == 201
        customer = signup.json()["id"]

        async def till_knows_the_phone() -> bool:
            response = await client.post(
                "/v1/loyalty/purchases",
                json={
                    "customer": {"phone": "+60128887777"},
                    "order_id": "T-1",
                    "currency": "MYR",
                    "total_minor": 1_000,
                },
                headers=headers,
            )
            return response.status_code in (200, 201)

        await eventually(till_knows_the_phone)

        outside = PurchaseCompleted(
            purchase_id=uuid.uuid4(),
            customer_id=uuid.UUID(customer),
            store_id="web",
            order_id="SHOPIFY-77",
            currency="MYR",
            total_minor=4_200,
            channel="web",
            purchased_at=datetime.now(UTC),
        ).to_envelope(source="webshop")
        payload = outside.model_dump_json().encode()
        if broker is not None:
            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
            await producer.start()
            try:
                await producer.send_and_wait("crm.purchases", payload, key=customer.encode())
                await producer.send_and_wait("crm.purchases", payload, key=customer.encode())
            finally:
                await producer.stop()
        else:
            runtime_transport = app.state.runtime.transport
            message = OutgoingMessage("crm.purchases", customer, payload)
            await runtime_transport.publish([message, message])  # delivered twice

        async def earned() -> bool:
            member = await client.get(f"/v1/loyalty/members/{customer}", headers=headers)
            return bool(member.json()["balance"] == 10 + 42)

        await eventually(earned)
        await asyncio.sleep(0.5)
        member = (await client.get(f"/v1/loyalty/members/{customer}", headers=headers)).json()
        assert member["balance"] == 52, "the twice-delivered purchase counts once"
