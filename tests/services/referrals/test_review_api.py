"""The referral list and review: approve and reject flagged referrals, and their 409s."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.settings import Settings
from tests.services.referrals.test_attributions_api import attribute, referrer_with_code
from tests.services.referrals.test_codes_api import seed_customer
from tests.services.referrals.test_programmes_api import new_programme

REFERRALS = "/v1/referrals"
Sessions = async_sessionmaker[AsyncSession]


async def flagged_referral(
    sessions: Sessions, settings: Settings, *, signed_up_at: datetime | None = None
) -> tuple[str, uuid.UUID]:
    """A self-referral (same email on both sides) attributed at signup: (id, referee)."""
    signed_up_at = signed_up_at or datetime.now(UTC) - timedelta(hours=2)
    email = f"{uuid.uuid4().hex}@example.com"
    _, code = await referrer_with_code(sessions, email_key=email)
    referee = await seed_customer(sessions, email_key=email, signed_up_at=signed_up_at)
    made = await attribute(sessions, settings, referee, code, at=signed_up_at)
    assert made.status == "flagged"
    return str(made.referral_id), referee


async def pending_referral(sessions: Sessions, settings: Settings) -> str:
    _, code = await referrer_with_code(sessions)
    referee = await seed_customer(sessions, signed_up_at=datetime.now(UTC))
    made = await attribute(sessions, settings, referee, code, at=datetime.now(UTC))
    assert made.status == "pending"
    return str(made.referral_id)


async def test_list_filters_and_pages_newest_first(
    client: httpx.AsyncClient, sessions: Sessions, settings: Settings, reader: dict[str, str]
) -> None:
    flagged = [(await flagged_referral(sessions, settings))[0] for _ in range(3)]
    pending = await pending_referral(sessions, settings)

    everything = await client.get(REFERRALS, headers=reader)
    assert everything.status_code == 200, everything.text
    assert [r["id"] for r in everything.json()["items"]] == [pending, *flagged[::-1]]

    seen: list[str] = []
    params: dict[str, Any] = {"status": "flagged", "limit": 2}
    while True:
        page = await client.get(REFERRALS, params=params, headers=reader)
        assert page.status_code == 200, page.text
        seen += [r["id"] for r in page.json()["items"]]
        assert all(r["status"] == "flagged" for r in page.json()["items"])
        if page.json()["next_cursor"] is None:
            break
        params["cursor"] = page.json()["next_cursor"]
    assert seen == flagged[::-1]

    one = await client.get(
        REFERRALS,
        params={"referrer_id": everything.json()["items"][0]["referrer_id"]},
        headers=reader,
    )
    assert [r["id"] for r in one.json()["items"]] == [pending]
    referee = everything.json()["items"][1]["referee_id"]
    by_referee = await client.get(REFERRALS, params={"referee_id": referee}, headers=reader)
    assert [r["id"] for r in by_referee.json()["items"]] == [flagged[2]]

    bad = await client.get(REFERRALS, params={"cursor": "not a cursor!"}, headers=reader)
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "query.cursor"
    unknown_status = await client.get(REFERRALS, params={"status": "lost"}, headers=reader)
    assert unknown_status.status_code == 422


async def test_get_one_and_the_paths_it_must_not_shadow(
    client: httpx.AsyncClient, sessions: Sessions, settings: Settings, reader: dict[str, str]
) -> None:
    referral_id, referee = await flagged_referral(sessions, settings)
    one = await client.get(f"{REFERRALS}/{referral_id}", headers=reader)
    assert one.status_code == 200
    assert one.json()["referee_id"] == str(referee)
    assert one.json()["flag_reasons"] == ["self_referral"]
    assert (await client.get(f"{REFERRALS}/{uuid.uuid4()}", headers=reader)).status_code == 404
    assert (await client.get(f"{REFERRALS}/programmes", headers=reader)).status_code == 200
    assert (await client.get(f"{REFERRALS}/nonsense", headers=reader)).status_code == 404


async def test_approve_moves_flagged_to_pending(
    client: httpx.AsyncClient,
    sessions: Sessions,
    settings: Settings,
    admin: dict[str, str],
    pos: dict[str, str],
) -> None:
    referral_id, _ = await flagged_referral(sessions, settings)
    url = f"{REFERRALS}/{referral_id}/approve"
    assert (await client.post(url, headers=pos)).status_code == 403
    approved = await client.post(url, json={"note": "Twins, checked ID."}, headers=admin)
    assert approved.status_code == 200, approved.text
    body = approved.json()
    assert body["status"] == "pending"  # no purchase yet: it waits like any other
    assert body["note"] == "Twins, checked ID."
    assert body["reviewed_by"]
    assert body["reviewed_at"] is not None
    assert body["closed_at"] is None

    again = await client.post(url, headers=admin)
    assert again.status_code == 409
    assert again.json()["status_now"] == "pending"
    missing = await client.post(f"{REFERRALS}/{uuid.uuid4()}/approve", headers=admin)
    assert missing.status_code == 404


async def test_approve_evaluates_at_once(
    client: httpx.AsyncClient, sessions: Sessions, settings: Settings, admin: dict[str, str]
) -> None:
    signed_up_at = datetime.now(UTC) - timedelta(days=2)
    await new_programme(client, admin, starts_at=signed_up_at - timedelta(days=1))
    referral_id, referee = await flagged_referral(sessions, settings, signed_up_at=signed_up_at)
    async with sessions() as session, session.begin():
        await session.execute(
            text(
                "INSERT INTO referrals.purchases (id, customer_id, currency, total_minor,"
                " purchased_at) VALUES (:id, :customer, 'MYR', 9000, :at)"
            ),
            {"id": uuid.uuid4(), "customer": referee, "at": signed_up_at + timedelta(hours=1)},
        )
        # Bought before signing up (why it was flagged): not the purchase that decides.
        await session.execute(
            text(
                "INSERT INTO referrals.purchases (id, customer_id, currency, total_minor,"
                " purchased_at) VALUES (:id, :customer, 'MYR', 100, :at)"
            ),
            {"id": uuid.uuid4(), "customer": referee, "at": signed_up_at - timedelta(days=30)},
        )
    approved = await client.post(
        f"{REFERRALS}/{referral_id}/approve",
        json={"note": "Old customer, new card."},
        headers=admin,
    )
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "qualified"
    assert approved.json()["note"] == "Old customer, new card."
    async with sessions() as session:
        roles = await session.execute(
            text("SELECT role FROM referrals.rewards WHERE referral_id = :id ORDER BY role"),
            {"id": referral_id},
        )
        assert roles.scalars().all() == ["referee", "referrer"]


async def test_reject_closes_flagged_or_pending_only(
    client: httpx.AsyncClient,
    sessions: Sessions,
    settings: Settings,
    admin: dict[str, str],
    reader: dict[str, str],
) -> None:
    flagged, _ = await flagged_referral(sessions, settings)
    pending = await pending_referral(sessions, settings)
    url = f"{REFERRALS}/{flagged}/reject"
    assert (await client.post(url, json={}, headers=admin)).status_code == 422
    assert (await client.post(url, json={"reason": "  "}, headers=admin)).status_code == 422
    untouched = await client.get(f"{REFERRALS}/{flagged}", headers=reader)
    assert untouched.json()["status"] == "flagged"

    for referral_id in (flagged, pending):
        rejected = await client.post(
            f"{REFERRALS}/{referral_id}/reject", json={"reason": "Same person."}, headers=admin
        )
        assert rejected.status_code == 200, rejected.text
        body = rejected.json()
        assert body["status"] == "rejected"
        assert body["note"] == "Same person."
        assert body["closed_at"] is not None
        assert body["reviewed_by"]

    twice = await client.post(url, json={"reason": "again"}, headers=admin)
    assert twice.status_code == 409
    approve = await client.post(f"{REFERRALS}/{flagged}/approve", headers=admin)
    assert approve.status_code == 409
    assert approve.json()["status_now"] == "rejected"
