"""`GET /members/{id}/redemptions`: newest first, status filter, `before` cursor, limits."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.auth import Scope
from shared.settings import Settings
from tests.services.loyalty.test_rewards_api import (
    REDEMPTIONS,
    engine,
    member_with,
    new_reward,
    sql,
)
from tests.support.auth import auth

__all__ = ["engine"]  # the fixture, used below


def url(customer: str) -> str:
    return f"/v1/loyalty/members/{customer}/redemptions"


async def test_member_redemptions_newest_first_filtered_and_paged(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    pos: dict[str, str],
    settings: Settings,
    engine: AsyncEngine,
) -> None:
    customer = await member_with(client, pos, 500)
    other = await member_with(client, pos, 100)
    reward = await new_reward(client, admin)
    made: list[str] = []
    for body in (
        {"reward_id": reward},
        {"points": 20, "amount_minor": 20, "currency": "MYR"},
        {"reward_id": reward},
        {"points": 10},
    ):
        response = await client.post(
            REDEMPTIONS, json={"customer_id": customer} | body, headers=pos
        )
        assert response.status_code == 201, response.text
        made.append(response.json()["id"])
    theirs = await client.post(REDEMPTIONS, json={"customer_id": other, "points": 5}, headers=pos)
    assert theirs.status_code == 201, theirs.text
    # Distinct timestamps, oldest first in `made`, plus two that tie (id breaks the tie).
    base = datetime.now(UTC) - timedelta(hours=1)
    stamps = [
        base,
        base + timedelta(minutes=1),
        base + timedelta(minutes=2),
        base + timedelta(minutes=2),
    ]
    for redemption_id, created_at in zip(made, stamps, strict=True):
        await sql(
            engine,
            "UPDATE loyalty.redemptions SET created_at = :t WHERE id = :i",
            t=created_at,
            i=uuid.UUID(redemption_id),
        )
    assert (await client.post(f"{REDEMPTIONS}/{made[0]}/confirm", headers=pos)).status_code == 200
    assert (await client.post(f"{REDEMPTIONS}/{made[1]}/release", headers=pos)).status_code == 200
    # The last two share a created_at: the larger id comes first.
    expected = [*sorted(made[2:], key=uuid.UUID, reverse=True), made[1], made[0]]

    read = auth(settings, Scope.READ)
    listed = await client.get(url(customer), headers=read)
    assert listed.status_code == 200, listed.text
    assert [r["id"] for r in listed.json()] == expected
    assert {r["customer_id"] for r in listed.json()} == {customer}

    pages: list[str] = []
    before: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 1}
        if before is not None:
            params["before"] = before
        page = (await client.get(url(customer), params=params, headers=read)).json()
        if not page:
            break
        assert len(page) == 1
        pages.append(page[0]["id"])
        before = page[0]["id"]
    assert pages == expected

    second = await client.get(
        url(customer), params={"limit": 2, "before": expected[1]}, headers=read
    )
    assert [r["id"] for r in second.json()] == expected[2:4]

    confirmed = await client.get(url(customer), params={"status": "confirmed"}, headers=read)
    assert [(r["id"], r["status"]) for r in confirmed.json()] == [(made[0], "confirmed")]
    reserved = await client.get(url(customer), params={"status": "reserved"}, headers=read)
    assert [r["id"] for r in reserved.json()] == expected[:2]
    released = await client.get(url(customer), params={"status": "released"}, headers=read)
    assert [r["id"] for r in released.json()] == [made[1]]


async def test_member_redemptions_refusals(
    client: httpx.AsyncClient, pos: dict[str, str], settings: Settings
) -> None:
    customer = await member_with(client, pos, 100)
    other = await member_with(client, pos, 100)
    theirs = await client.post(REDEMPTIONS, json={"customer_id": other, "points": 5}, headers=pos)
    read = auth(settings, Scope.READ)
    assert (await client.get(url(customer))).status_code == 401
    assert (await client.get(url(customer), headers=read)).json() == []
    for params in ({"limit": 0}, {"limit": 201}, {"status": "lost"}, {"before": "nope"}):
        response = await client.get(url(customer), params=params, headers=read)
        assert response.status_code == 422, (params, response.text)
    assert (await client.get(url(customer), params={"limit": 200}, headers=read)).status_code == 200
    foreign = await client.get(url(customer), params={"before": theirs.json()["id"]}, headers=read)
    assert foreign.status_code == 400, foreign.text
    assert foreign.json()["type"].endswith("invalid-cursor")
    unknown = await client.get(url(str(uuid.uuid4())), headers=read)
    assert unknown.status_code == 404
    assert unknown.json()["type"].endswith("member-not-found")
