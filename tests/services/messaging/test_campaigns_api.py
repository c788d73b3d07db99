"""Campaigns through the API: validation, start, schedules, pause / resume / cancel,
progress, completion, holdouts and results."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.messaging import campaign_outcomes, campaigns
from shared.settings import Settings

CAMPAIGNS = "/v1/messaging/campaigns"
SEGMENT = uuid.UUID("5e6e0000-0000-0000-0000-000000000001")


def customer(prefix: str, n: int) -> uuid.UUID:
    """The id `seed` gives the n-th customer of a batch."""
    return uuid.UUID(bytes=hashlib.md5(f"{prefix}{n}".encode()).digest())


async def seed(
    sessions: async_sessionmaker[AsyncSession],
    count: int,
    *,
    prefix: str = "c",
    segment_id: uuid.UUID | None = SEGMENT,
    consent: str = "granted",
    time_zone: str | None = "Asia/Kuala_Lumpur",
    tier: str = "gold",
    locale: str = "en",
) -> list[uuid.UUID]:
    """`count` recipients (email, the given consent), set-wise, optionally in a segment."""
    async with sessions() as session, session.begin():
        await session.execute(
            text(
                """
                INSERT INTO messaging.recipients (customer_id, status, given_name, email,
                    locale, time_zone, consents, undeliverable, tier, updated_at)
                SELECT md5(:prefix || g)::uuid, 'active', 'Customer ' || g,
                       :prefix || g || '@example.com', :locale, :zone,
                       jsonb_build_object('email', CAST(:consent AS text)), '{}', :tier, now()
                FROM generate_series(1, :count) AS g
                """
            ),
            {
                "prefix": prefix,
                "count": count,
                "consent": consent,
                "zone": time_zone,
                "tier": tier,
                "locale": locale,
            },
        )
        if segment_id is not None:
            await session.execute(
                text(
                    """
                    INSERT INTO messaging.segment_members
                        (segment_id, customer_id, segment_name, entered_at)
                    SELECT :segment, md5(:prefix || g)::uuid, 'loyal', now()
                    FROM generate_series(1, :count) AS g
                    """
                ),
                {"segment": segment_id, "prefix": prefix, "count": count},
            )
    return [customer(prefix, n) for n in range(1, count + 1)]


async def add_template(
    sessions: async_sessionmaker[AsyncSession], name: str = "promo", channel: str = "email"
) -> None:
    async with sessions() as session, session.begin():
        await session.execute(
            text(
                """
                INSERT INTO messaging.templates
                    (id, name, channel, locale, subject, body, created_at, updated_at)
                VALUES (gen_random_uuid(), :name, :channel, 'en', 'Hello {{ name }}',
                        'Your code {{ voucher_code }}', now(), now())
                """
            ),
            {"name": name, "channel": channel},
        )


async def sql(sessions: async_sessionmaker[AsyncSession], statement: str, **params: Any) -> Any:
    async with sessions() as session, session.begin():
        result = cast(CursorResult[Any], await session.execute(text(statement), params))
        return list(result.all()) if result.returns_rows else None


async def new_campaign(client: httpx.AsyncClient, admin: dict[str, str], **fields: Any) -> str:
    body = {
        "name": "Year-end",
        "audience": {"segment_id": str(SEGMENT)},
        "channels": ["email"],
        "template": "promo",
    } | fields
    response = await client.post(CAMPAIGNS, json=body, headers=admin)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"audience": {}}, "body.audience"),
        ({"audience": {"filter": {"shoe_size": ["42"]}}}, "body.audience.filter.shoe_size.[key]"),
        ({"audience": {"filter": {"tier": []}}}, "body.audience.filter.tier"),
        ({"channels": []}, "body.channels"),
        ({"channels": ["email", "email"]}, "body"),
        ({"channels": ["fax"]}, "body.channels.0"),
        ({"offer": {"kind": "voucher"}}, "body.offer"),
        ({"offer": {"kind": "voucher", "code_template": "XMAS"}}, "body.offer.code_template"),
        ({"schedule": {"kind": "at"}}, "body.schedule"),
        ({"schedule": {"kind": "local", "at": "2026-12-01T10:00:00+07:00"}}, "body.schedule"),
        ({"experiment": {"arms": [{"name": "A"}]}}, "body.experiment.arms"),
        ({"experiment": {"arms": [{"name": "A"}, {"name": "holdout"}]}}, "body.experiment"),
        ({"template": "nope"}, "template"),
        ({"surprise": 1}, "body.surprise"),
    ],
)
async def test_bad_campaigns_are_refused_and_change_nothing(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
    body: dict[str, Any],
    field: str,
) -> None:
    await add_template(sessions)
    base = {
        "name": "x",
        "audience": {"segment_id": str(SEGMENT)},
        "channels": ["email"],
        "template": "promo",
    }
    response = await client.post(CAMPAIGNS, json=base | body, headers=admin)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    fields = [error["field"] for error in response.json()["errors"]]
    assert any(f.startswith(field) for f in fields), fields
    assert await sql(sessions, "SELECT count(*) FROM messaging.campaigns") == [(0,)]


async def test_readers_see_admins_write(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    reader: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await add_template(sessions)
    refused = await client.post(
        CAMPAIGNS,
        json={
            "name": "x",
            "audience": {"segment_id": str(SEGMENT)},
            "channels": ["email"],
            "template": "promo",
        },
        headers=reader,
    )
    assert refused.status_code == 403
    campaign_id = await new_campaign(client, admin)
    seen = await client.get(f"{CAMPAIGNS}/{campaign_id}", headers=reader)
    assert seen.status_code == 200
    assert seen.json()["status"] == "draft"
    listed = await client.get(CAMPAIGNS, params={"status": "draft"}, headers=reader)
    assert [c["id"] for c in listed.json()] == [campaign_id]
    assert (
        await client.post(f"{CAMPAIGNS}/{campaign_id}/start", headers=reader)
    ).status_code == 403
    missing = await client.get(f"{CAMPAIGNS}/{uuid.uuid4()}", headers=reader)
    assert missing.status_code == 404
    assert missing.json()["type"].endswith("campaign-not-found")


async def test_start_enqueues_each_member_once_and_skips_who_cannot_be_reached(
    client: httpx.AsyncClient, admin: dict[str, str], sessions: async_sessionmaker[AsyncSession]
) -> None:
    await add_template(sessions)
    reachable = await seed(sessions, 300)
    await seed(sessions, 20, prefix="nc", consent="revoked")
    await seed(sessions, 5, prefix="out", segment_id=None)  # not in the segment
    campaign_id = await new_campaign(
        client, admin, offer={"kind": "voucher", "code_template": "YE-{code}"}
    )
    started = await client.post(f"{CAMPAIGNS}/{campaign_id}/start", headers=admin)
    assert started.status_code == 200, started.text
    view = started.json()
    assert view["status"] == "running"
    assert view["progress"]["queued"] == 300
    assert view["progress"]["skipped"] == {"no-consent": 20}
    assert view["progress"]["total"] == 320

    again = await client.post(f"{CAMPAIGNS}/{campaign_id}/start", headers=admin)
    assert again.status_code == 409
    # Materialising again (a crash mid-start, a redelivery) adds nobody.
    async with sessions() as session, session.begin():
        campaign = await campaigns.get(session, uuid.UUID(campaign_id))
        assert campaign is not None
        await campaigns.materialise(
            session,
            campaign,
            now=datetime.now(UTC),
            business=ZoneInfo("UTC"),
        )
    rows = await sql(
        sessions,
        "SELECT customer_id, payload FROM messaging.sends WHERE status = 'queued'",
    )
    assert len(rows) == 300
    assert {row[0] for row in rows} == set(reachable)
    codes = {row[1]["data"]["offer"]["voucher_code"] for row in rows}
    assert len(codes) == 300
    assert all(code.startswith("YE-") for code in codes)
    assert rows[0][1]["template"] == "promo"


async def test_a_saved_filter_selects_by_attributes(
    client: httpx.AsyncClient, admin: dict[str, str], sessions: async_sessionmaker[AsyncSession]
) -> None:
    await add_template(sessions)
    gold_ms = await seed(sessions, 10, prefix="gm", tier="gold", locale="ms-MY", segment_id=None)
    await seed(sessions, 10, prefix="gt", tier="gold", locale="th-TH", segment_id=None)
    await seed(sessions, 10, prefix="sm", tier="silver", locale="ms-MY", segment_id=None)
    campaign_id = await new_campaign(
        client, admin, audience={"filter": {"tier": ["gold"], "locale": ["ms-MY"]}}
    )
    await client.post(f"{CAMPAIGNS}/{campaign_id}/start", headers=admin)
    rows = await sql(sessions, "SELECT customer_id FROM messaging.sends")
    assert {row[0] for row in rows} == set(gold_ms)


async def test_local_time_schedule_follows_each_recipients_zone(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    await add_template(sessions)
    kl = await seed(sessions, 3, prefix="kl", time_zone="Asia/Kuala_Lumpur")
    bkk = await seed(sessions, 3, prefix="bkk", time_zone="Asia/Bangkok")
    unknown = await seed(sessions, 3, prefix="unk", time_zone=None)
    at = (datetime.now(UTC) + timedelta(days=3)).date()
    campaign_id = await new_campaign(
        client, admin, schedule={"kind": "local", "at": f"{at}T10:00:00"}
    )
    started = await client.post(f"{CAMPAIGNS}/{campaign_id}/start", headers=admin)
    assert started.json()["status"] == "scheduled"
    assert started.json()["progress"]["deferred"] == 9
    due = dict(await sql(sessions, "SELECT customer_id, not_before FROM messaging.sends"))
    ten = datetime(at.year, at.month, at.day, 10, tzinfo=UTC)
    assert {due[c] for c in kl} == {ten - timedelta(hours=8)}
    assert {due[c] for c in bkk} == {ten - timedelta(hours=7)}
    # No zone: the business zone (Kuala Lumpur by default).
    assert settings.messaging_time_zone == "Asia/Kuala_Lumpur"
    assert {due[c] for c in unknown} == {ten - timedelta(hours=8)}


async def test_pause_resume_cancel_and_completion(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    await add_template(sessions)
    await seed(sessions, 10)
    campaign_id = await new_campaign(client, admin)
    url = f"{CAMPAIGNS}/{campaign_id}"
    assert (await client.post(f"{url}/resume", headers=admin)).status_code == 409
    await client.post(f"{url}/start", headers=admin)
    paused = await client.post(f"{url}/pause", headers=admin)
    assert paused.json()["status"] == "paused"
    # A paused campaign is not completed even once nothing is queued.
    await sql(sessions, "UPDATE messaging.sends SET status = 'sent', sent_at = now()")
    assert await campaign_outcomes.check_campaigns(sessions, settings) == 0
    resumed = await client.post(f"{url}/resume", headers=admin)
    assert resumed.json()["status"] == "running"
    # One row left reserved: not finished.
    await sql(
        sessions,
        "UPDATE messaging.sends SET status = 'reserved' WHERE id = "
        "(SELECT id FROM messaging.sends LIMIT 1)",
    )
    assert await campaign_outcomes.check_campaigns(sessions, settings) == 0
    await sql(sessions, "UPDATE messaging.sends SET status = 'sent' WHERE status = 'reserved'")
    assert await campaign_outcomes.check_campaigns(sessions, settings) == 1
    assert await campaign_outcomes.check_campaigns(sessions, settings) == 0
    done = (await client.get(url, headers=admin)).json()
    assert done["status"] == "completed"
    assert done["progress"]["sent"] == 10
    events = await sql(
        sessions,
        "SELECT payload FROM messaging.outbox WHERE event_type = 'campaign.completed'",
    )
    assert len(events) == 1
    assert (await client.post(f"{url}/cancel", headers=admin)).status_code == 409

    other = await new_campaign(client, admin, name="Other")
    await client.post(f"{CAMPAIGNS}/{other}/start", headers=admin)
    cancelled = await client.post(f"{CAMPAIGNS}/{other}/cancel", headers=admin)
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["progress"]["cancelled"] == 10
    assert cancelled.json()["progress"]["queued"] == 0


async def test_holdout_rows_are_recorded_and_results_measure_every_arm(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await add_template(sessions)
    await seed(sessions, 2000)
    # Unreachable customers never join the control group: they would flatter the arms.
    revoked = set(await seed(sessions, 300, prefix="nc", consent="revoked"))
    campaign_id = await new_campaign(
        client,
        admin,
        offer={"kind": "voucher", "code": "SALE10"},
        experiment={
            "arms": [
                {"name": "A", "weight": 1},
                {"name": "B", "weight": 1, "offer": {"kind": "voucher", "code": "SALE20"}},
            ],
            "holdout": 0.1,
            "min_sample": 100,
        },
    )
    view = (await client.post(f"{CAMPAIGNS}/{campaign_id}/start", headers=admin)).json()
    held = view["progress"]["held_out"]
    assert 140 < held < 260
    assert view["progress"]["queued"] == 2000 - held
    assert view["progress"]["skipped"] == {"no-consent": 300}
    held_ids = await sql(
        sessions, "SELECT customer_id FROM messaging.sends WHERE status = 'held_out'"
    )
    assert not revoked & {row[0] for row in held_ids}
    by_variant = dict(
        await sql(
            sessions,
            "SELECT variant, count(*) FROM messaging.sends GROUP BY variant",
        )
    )
    assert set(by_variant) == {"A", "B", "holdout"}
    codes = dict(
        await sql(
            sessions,
            "SELECT DISTINCT variant, payload->'data'->'offer'->>'voucher_code'"
            " FROM messaging.sends WHERE status = 'queued'",
        )
    )
    assert codes == {"A": "SALE10", "B": "SALE20"}

    # Everyone is sent; B's recipients buy more often, and so do a few of the holdout.
    now = datetime.now(UTC)
    await sql(
        sessions,
        "UPDATE messaging.sends SET status = 'sent', sent_at = :now WHERE status = 'queued'",
        now=now,
    )
    await sql(
        sessions,
        """
        INSERT INTO messaging.conversions
            (purchase_id, customer_id, send_id, currency, total_minor, purchased_at)
        SELECT gen_random_uuid(), customer_id, NULL, 'MYR', 5000, :at
        FROM (SELECT customer_id, variant,
                     row_number() OVER (PARTITION BY variant ORDER BY customer_id) AS n
              FROM messaging.sends WHERE status IN ('sent', 'held_out')) AS s
        WHERE (variant = 'A' AND n <= 50) OR (variant = 'B' AND n <= 150)
           OR (variant = 'holdout' AND n <= 10)
        """,
        at=now + timedelta(days=1),
    )
    # A purchase after the attribution window converts nobody.
    await sql(
        sessions,
        """
        INSERT INTO messaging.conversions
            (purchase_id, customer_id, send_id, currency, total_minor, purchased_at)
        SELECT gen_random_uuid(), customer_id, NULL, 'MYR', 99999, :at
        FROM messaging.sends WHERE variant = 'A' ORDER BY customer_id DESC LIMIT 5
        """,
        at=now + timedelta(days=30),
    )
    results = (await client.get(f"{CAMPAIGNS}/{campaign_id}/results", headers=admin)).json()
    arms = {arm["variant"]: arm for arm in results["arms"]}
    assert arms["A"]["converted"] == 50
    assert arms["B"]["converted"] == 150
    assert arms["holdout"]["converted"] == 10
    assert arms["B"]["revenue_minor"] == {"MYR": 150 * 5000}
    assert results["converted"] == 200
    assert results["revenue_minor"] == {"MYR": 200 * 5000}
    assert results["sent"] == 2000 - held
    rate = arms["B"]["conversion_rate"]
    assert rate["estimate"] == pytest.approx(150 / arms["B"]["recipients"])
    assert rate["low"] < rate["estimate"] < rate["high"]
    assert results["decision"]["winner"] == "B"
