"""Programme versions: validation, listing, and which version is in force when."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.referrals import programmes

PROGRAMMES = "/v1/referrals/programmes"
RULES: dict[str, Any] = {
    "referrer_points": 500,
    "referee_points": 200,
    "minimum_purchase_minor": 5000,
    "qualify_within_days": 30,
}
JAN = datetime(2026, 1, 1, tzinfo=UTC)


async def new_programme(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    starts_at: datetime = JAN,
    ends_at: datetime | None = None,
    **rules: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {"starts_at": starts_at.isoformat(), "rules": RULES | rules}
    if ends_at is not None:
        body["ends_at"] = ends_at.isoformat()
    response = await client.post(PROGRAMMES, json=body, headers=admin)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def test_create_and_read_back(
    client: httpx.AsyncClient, admin: dict[str, str], reader: dict[str, str]
) -> None:
    created = await new_programme(client, admin, monthly_cap=3)
    assert created["version"] >= 1
    assert created["rules"]["referrer_points"] == 500
    assert created["rules"]["currency"] == "MYR"
    assert created["rules"]["monthly_cap"] == 3
    assert created["ends_at"] is None
    assert created["created_by"]
    one = await client.get(f"{PROGRAMMES}/{created['version']}", headers=reader)
    assert one.status_code == 200
    assert one.json() == created
    current = await client.get(f"{PROGRAMMES}/current", headers=reader)
    assert current.status_code == 200
    assert current.json() == created


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"rules": RULES | {"referrer_points": -1}}, "body.rules.referrer_points"),
        ({"rules": RULES | {"qualify_within_days": 0}}, "body.rules.qualify_within_days"),
        ({"rules": RULES | {"currency": "myr"}}, "body.rules.currency"),
        ({"rules": RULES | {"bonus": 1}}, "body.rules.bonus"),
        ({"rules": RULES | {"referrer_points_by_tier": {"gold": -5}}}, "body.rules"),
        ({"rules": RULES | {"referrer_points": 0, "referee_points": 0}}, "body.rules"),
        ({"rules": {k: v for k, v in RULES.items() if k != "qualify_within_days"}}, "body.rules"),
        ({"starts_at": "2026-01-01T00:00:00"}, "body.starts_at"),
        ({"starts_at": "tomorrow"}, "body.starts_at"),
        ({"surprise": True}, "body.surprise"),
        ({"ends_at": "2025-12-31T00:00:00Z"}, "body.ends_at"),
        ({"ends_at": JAN.isoformat()}, "body.ends_at"),
    ],
)
async def test_invalid_programmes_are_422_naming_the_field(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    reader: dict[str, str],
    change: dict[str, Any],
    field: str,
) -> None:
    body = {"starts_at": JAN.isoformat(), "rules": RULES} | change
    response = await client.post(PROGRAMMES, json=body, headers=admin)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    fields = [error["field"] for error in response.json()["errors"]]
    assert any(f.startswith(field) for f in fields), fields
    listed = await client.get(PROGRAMMES, headers=reader)
    assert listed.json() == []


async def test_only_admins_define_programmes(
    client: httpx.AsyncClient, pos: dict[str, str]
) -> None:
    body = {"starts_at": JAN.isoformat(), "rules": RULES}
    assert (await client.post(PROGRAMMES, json=body, headers=pos)).status_code == 403
    assert (await client.post(PROGRAMMES, json=body)).status_code == 401


async def test_list_is_newest_first_and_pages(
    client: httpx.AsyncClient, admin: dict[str, str], reader: dict[str, str]
) -> None:
    versions = [(await new_programme(client, admin))["version"] for _ in range(3)]
    listed = await client.get(PROGRAMMES, headers=reader)
    assert [p["version"] for p in listed.json()] == versions[::-1]
    first = await client.get(PROGRAMMES, params={"limit": 2}, headers=reader)
    assert [p["version"] for p in first.json()] == versions[:0:-1]
    rest = await client.get(PROGRAMMES, params={"limit": 2, "before": versions[1]}, headers=reader)
    assert [p["version"] for p in rest.json()] == versions[:1]


async def test_no_programme_in_force_is_404(
    client: httpx.AsyncClient, admin: dict[str, str], reader: dict[str, str]
) -> None:
    missing = await client.get(f"{PROGRAMMES}/current", headers=reader)
    assert missing.status_code == 404
    future = datetime.now(UTC) + timedelta(days=30)
    await new_programme(client, admin, starts_at=future)
    past = datetime.now(UTC) - timedelta(days=30)
    await new_programme(client, admin, starts_at=past - timedelta(days=1), ends_at=past)
    assert (await client.get(f"{PROGRAMMES}/current", headers=reader)).status_code == 404
    assert (await client.get(f"{PROGRAMMES}/999", headers=reader)).status_code == 404


async def test_the_newest_version_covering_a_moment_is_in_force(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    march, april = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)
    base = await new_programme(client, admin, referrer_points=100)
    promo = await new_programme(client, admin, march, april, referrer_points=900)
    async with sessions() as session:
        assert await programmes.programme_at(session, JAN - timedelta(seconds=1)) is None
        for moment, expected in [
            (JAN, base),
            (march - timedelta(seconds=1), base),
            (march, promo),
            (april - timedelta(microseconds=1), promo),
            (april, base),
        ]:
            found = await programmes.programme_at(session, moment)
            assert found is not None
            version, rules = found
            assert version == expected["version"], moment
            assert rules.referrer_points == expected["rules"]["referrer_points"]
        kept = await programmes.programme_version(session, base["version"])
        assert kept.referrer_points == 100
        with pytest.raises(programmes.UnknownProgramme):
            await programmes.programme_version(session, 999)
