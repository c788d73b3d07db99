"""End to end: a signup over HTTP reaches a consumer through the transport, then its erasure.

The contacts app runs with its workers (so its relay publishes the outbox); a test-only
consumer group, in a schema of its own like any other service, subscribes through the
runtime's transport and records each event it applies in a table, inside the consumer's
transaction, so a redelivery that slipped past the inbox would show as a second row.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from services.contacts import SERVICE
from shared.db.engine import session_factory
from shared.db.migrations import migrate
from shared.events.contacts import CustomerErased, CustomerSignedUp
from shared.events.envelope import Event, EventEnvelope
from shared.events.registry import EVENTS
from shared.http.app import create_app
from shared.pipeline.consumer import ConsumerGroup, ConsumerRunner
from shared.runtime import Runtime
from shared.settings import Settings
from tests.http.app import client_for
from tests.pipeline.harness import MIGRATIONS, SCHEMA, wait_until

GROUP = "test.contacts-e2e"
TRANSPORTS = ["postgres", pytest.param("kafka", marks=pytest.mark.kafka)]


async def record(session: AsyncSession, event: Event, envelope: EventEnvelope) -> None:
    """The test handler: one row per applied event."""
    await session.execute(
        text(
            f"INSERT INTO {SCHEMA}.received (event_id, type, subject, data) "
            "VALUES (:id, :type, :subject, CAST(:data AS jsonb))"
        ),
        {
            "id": envelope.id,
            "type": envelope.type,
            "subject": envelope.subject,
            "data": event.model_dump_json(),
        },
    )


@pytest.fixture(params=TRANSPORTS)
def e2e_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    quick: dict[str, Any] = {
        "relay_poll_interval_seconds": 0.1,
        "consumer_poll_interval_seconds": 0.2,
        "consumer_retry_backoff_seconds": 0.01,
    }
    if request.param == "kafka":
        broker = request.getfixturevalue("kafka_broker")
        quick |= {
            "transport": "kafka",
            "kafka_bootstrap_servers": broker.bootstrap,
            "kafka_session_timeout_ms": 6000,
            "kafka_heartbeat_interval_ms": 300,
        }
    return settings.model_copy(update=quick)


@pytest.fixture
async def running(e2e_settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, AsyncEngine]]:
    """The contacts app with its relay, and the test consumer on the app's transport."""
    app = create_app(e2e_settings, [SERVICE], run_workers=True)
    async with client_for(app) as client:
        runtime: Runtime = app.state.runtime
        assert runtime.transport is not None
        engine = runtime.engine(SERVICE.name)
        await migrate(engine, SCHEMA, MIGRATIONS)
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    f"CREATE TABLE {SCHEMA}.received (id bigint GENERATED ALWAYS AS IDENTITY, "
                    "event_id uuid NOT NULL, type text NOT NULL, subject text NOT NULL, "
                    "data jsonb NOT NULL)"
                )
            )
        group = ConsumerGroup(
            GROUP, SCHEMA, "e2e-test", {CustomerSignedUp: record, CustomerErased: record}, EVENTS
        )
        runner = ConsumerRunner(
            group,
            runtime.transport.subscribe(GROUP, group.topics),
            session_factory(engine),
            batch_size=100,
            retry_backoff=0.01,
            poll_interval=0.2,
        )
        task = asyncio.create_task(runner.run())
        try:
            yield client, engine
        finally:
            runner.stop()
            await asyncio.wait_for(task, 30)


async def received(engine: AsyncEngine) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(event id, type, subject, data) of every applied event, in application order."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(f"SELECT event_id::text, type, subject, data FROM {SCHEMA}.received ORDER BY id")
        )
        return [(r[0], r[1], r[2], r[3]) for r in rows]


async def test_signup_and_erasure_reach_a_consumer_once(
    running: tuple[httpx.AsyncClient, AsyncEngine],
    pos: dict[str, str],
    admin: dict[str, str],
) -> None:
    client, engine = running
    signup = await client.post(
        "/v1/contacts",
        json={
            "given_name": "Mei Ling",
            "email": "meiling@example.my",
            "phone": "016-222 3344",
            "birthday": {"month": 8, "day": 8},
            "source": "pos",
        },
        headers=pos,
    )
    assert signup.status_code == 201, signup.text
    customer = signup.json()

    async def signed_up() -> bool:
        return any(t == "customer.signed_up" for _, t, _, _ in await received(engine))

    await wait_until(signed_up, timeout=60)
    ((event_id, event_type, subject, data),) = await received(engine)
    assert event_type == "customer.signed_up"
    assert subject == customer["id"]
    uuid.UUID(event_id)
    assert data["customer_id"] == customer["id"]
    assert data["source"] == "pos"
    assert data["store_id"] == "kl-01"
    assert data["profile"]["email"] == "meiling@example.my"
    assert data["profile"]["phone"] == "+60162223344"
    assert data["profile"]["card_number"] == customer["card_number"]
    assert data["profile"]["birthday"] == {"month": 8, "day": 8, "year": None}

    async def marked_sent() -> bool:
        async with engine.connect() as connection:
            unsent = await connection.execute(
                text("SELECT count(*) FROM contacts.outbox WHERE published_at IS NULL")
            )
            return bool(unsent.scalar_one() == 0)

    # A consumer may see the event before the relay marks it sent: wait for the mark.
    await wait_until(marked_sent, timeout=30)
    erase = await client.delete(f"/v1/contacts/{customer['id']}", headers=admin)
    assert erase.status_code == 204

    async def erased() -> bool:
        return any(t == "customer.erased" for _, t, _, _ in await received(engine))

    await wait_until(erased, timeout=60)
    await asyncio.sleep(0.5)  # room for a stray redelivery to show up
    events = await received(engine)
    assert [(t, s) for _, t, s, _ in events] == [
        ("customer.signed_up", customer["id"]),
        ("customer.erased", customer["id"]),
    ]
    assert events[1][3]["customer_id"] == customer["id"]

    # The relay had sent the signup before the erasure, so its outbox row is gone; what
    # remains of hers is the erasure itself.
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT event_type, payload FROM contacts.outbox WHERE key = :key"),
            {"key": customer["id"]},
        )
        left = [(t, json.loads(p)) for t, p in rows]
    assert [t for t, _ in left] == ["customer.erased"]
    assert "meiling" not in json.dumps(left)
