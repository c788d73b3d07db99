"""A test's winner rolled out to the recipients kept back, and pausing seen by the dispatcher."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.messaging import campaign_outcomes
from services.messaging.dispatcher import Dispatcher
from shared.settings import Settings
from tests.services.messaging.test_campaigns_api import (
    CAMPAIGNS,
    add_template,
    new_campaign,
    seed,
    sql,
)
from tests.support.smtp_sink import Sink, smtp_sink

Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
def sink() -> Iterator[tuple[Sink, int]]:
    with smtp_sink() as running:
        yield running


async def test_the_winner_goes_to_the_rest_once_decided(
    client: httpx.AsyncClient, admin: dict[str, str], sessions: Sessions, settings: Settings
) -> None:
    await add_template(sessions)
    await add_template(sessions, name="promo-b")
    await seed(sessions, 2000)
    campaign_id = await new_campaign(
        client,
        admin,
        offer={"kind": "voucher", "code": "SALE10"},
        experiment={
            "arms": [
                {"name": "A"},
                {
                    "name": "B",
                    "template": "promo-b",
                    "offer": {"kind": "voucher", "code": "SALE20"},
                },
            ],
            "holdout": 0.1,
            "min_sample": 100,
            "auto_rollout": True,
            "test_fraction": 0.5,
            "rollout_after_hours": 24,
        },
    )
    before = datetime.now(UTC)
    await client.post(f"{CAMPAIGNS}/{campaign_id}/start", headers=admin)
    rest = await sql(
        sessions,
        "SELECT not_before, payload FROM messaging.sends WHERE variant = 'rest'",
    )
    assert 700 < len(rest) < 1100
    assert all(row[0] >= before + timedelta(hours=24) for row in rest)
    assert {row[1]["data"]["offer"]["voucher_code"] for row in rest} == {"SALE10"}

    # No decision without evidence: nothing moves.
    now = datetime.now(UTC)
    await sql(
        sessions,
        "UPDATE messaging.sends SET status = 'sent', sent_at = :now"
        " WHERE variant IN ('A', 'B') AND status = 'queued'",
        now=now,
    )
    await campaign_outcomes.check_campaigns(sessions, settings, now=now)
    view = (await client.get(f"{CAMPAIGNS}/{campaign_id}", headers=admin)).json()
    assert "winner" not in view["experiment"]

    # B converts three times as often as A.
    await sql(
        sessions,
        """
        INSERT INTO messaging.conversions
            (purchase_id, customer_id, send_id, currency, total_minor, purchased_at)
        SELECT gen_random_uuid(), customer_id, NULL, 'THB', 30000, :at
        FROM (SELECT customer_id, variant,
                     row_number() OVER (PARTITION BY variant ORDER BY customer_id) AS n
              FROM messaging.sends) AS s
        WHERE (variant = 'A' AND n <= 30) OR (variant = 'B' AND n <= 90)
        """,
        at=now + timedelta(hours=2),
    )
    await campaign_outcomes.check_campaigns(sessions, settings, now=now)
    view = (await client.get(f"{CAMPAIGNS}/{campaign_id}", headers=admin)).json()
    assert view["experiment"]["winner"] == "B"
    assert view["status"] == "running"
    rolled = await sql(
        sessions,
        "SELECT not_before, payload FROM messaging.sends WHERE variant = 'rest'",
    )
    assert len(rolled) == len(rest)
    assert {row[1]["data"]["offer"]["voucher_code"] for row in rolled} == {"SALE20"}
    assert {row[1]["template"] for row in rolled} == {"promo-b"}
    assert all(row[0] <= now + timedelta(minutes=1) for row in rolled)
    results = (await client.get(f"{CAMPAIGNS}/{campaign_id}/results", headers=admin)).json()
    assert results["decision"]["rolled_out"] == "B"
    assert results["revenue_minor"] == {"THB": 120 * 30000}

    # Deciding again changes nothing.
    await campaign_outcomes.check_campaigns(sessions, settings, now=now + timedelta(hours=1))
    assert (
        await sql(
            sessions, "SELECT not_before, payload FROM messaging.sends WHERE variant = 'rest'"
        )
        == rolled
    )


async def test_a_paused_campaign_is_not_sent_until_resumed(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    sessions: Sessions,
    settings: Settings,
    sink: tuple[Sink, int],
) -> None:
    mail, port = sink
    mail_settings = settings.model_copy(update={"smtp_port": port, "messaging_quiet_hours": (0, 0)})
    await add_template(sessions)
    await seed(sessions, 50)
    campaign_id = await new_campaign(client, admin)
    url = f"{CAMPAIGNS}/{campaign_id}"
    await client.post(f"{url}/start", headers=admin)
    await client.post(f"{url}/pause", headers=admin)
    dispatcher = Dispatcher(sessions, mail_settings)
    try:
        await dispatcher.run_once(100)
        assert mail.messages == []
        paused = (await client.get(url, headers=admin)).json()
        assert paused["progress"]["sent"] == 0
        assert paused["progress"]["queued"] + paused["progress"]["deferred"] == 50
        await client.post(f"{url}/resume", headers=admin)
        # The dispatcher deferred the paused rows a little; move its clock past that.
        await dispatcher.run_once(100, now=datetime.now(UTC) + timedelta(minutes=2))
    finally:
        await dispatcher.aclose()
    assert len(mail.messages) == 50
    assert await campaign_outcomes.check_campaigns(sessions, settings) == 1
    done = (await client.get(url, headers=admin)).json()
    assert done["status"] == "completed"
    assert uuid.UUID(done["id"])
