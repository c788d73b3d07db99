"""The metrics routes over the hand-built shop of `test_metrics` (answers worked out there)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.settings import Settings
from tests.services.scoring.test_metrics import seed_shop

METRICS = "/v1/scoring/metrics"
WINDOW = {"from": "2026-01-01", "to": "2026-03-31"}


async def test_summary(
    client: httpx.AsyncClient,
    reader: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await seed_shop(sessions)
    response = await client.get(f"{METRICS}/summary", params=WINDOW, headers=reader)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["window"] == WINDOW
    assert body["repeat_purchase"] == {
        "customers": 6,
        "repeat_customers": 2,
        "rate": pytest.approx(1 / 3),
    }
    assert [(m["month"], m["active_before"], m["churned"]) for m in body["churn"]] == [
        ("2026-01-01", 1, 0),
        ("2026-02-01", 3, 2),
        ("2026-03-01", 2, 2),
    ]
    assert body["clv"][0] == {
        "currency": "MYR",
        "customers": 3,
        "total": 400.0,
        "average": pytest.approx(400 / 3),
    }
    assert body["revenue"][0]["top_decile_share"] == pytest.approx(3500 / 9200)


async def test_cohorts(
    client: httpx.AsyncClient,
    reader: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await seed_shop(sessions)
    response = await client.get(f"{METRICS}/cohorts", params=WINDOW, headers=reader)
    assert response.status_code == 200, response.text
    assert response.json()["cohorts"] == [
        {"month": "2026-01-01", "customers": 2, "retention": [1.0, 0.5, 0.0]},
        {"month": "2026-02-01", "customers": 1, "retention": [1.0, 0.0]},
        {"month": "2026-03-01", "customers": 2, "retention": [1.0]},
    ]


async def test_what_if(
    client: httpx.AsyncClient,
    reader: dict[str, str],
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await seed_shop(sessions)
    response = await client.get(
        f"{METRICS}/what-if", params=WINDOW | {"retention_uplift": 0.5}, headers=reader
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["baseline_retention"] == pytest.approx(1 / 3)
    assert body["improved_retention"] == pytest.approx(0.5)
    assert body["horizon_months"] == pytest.approx(settings.scoring_horizon_days / (365.25 / 12))
    multiplier = body["clv_multiplier"]
    assert multiplier > 1
    myr = body["currencies"][0]
    assert myr["gained"] == pytest.approx(400 * (multiplier - 1))
    given = await client.get(
        f"{METRICS}/what-if", params={"retention_uplift": 0.05, "retention": 0.8}, headers=reader
    )
    assert given.json()["improved_retention"] == pytest.approx(0.84)


async def test_default_window_is_the_last_twelve_months(
    client: httpx.AsyncClient, reader: dict[str, str], settings: Settings
) -> None:
    today = datetime.now(UTC).astimezone(ZoneInfo(settings.scoring_time_zone)).date()
    body = (await client.get(f"{METRICS}/summary", headers=reader)).json()
    assert body["window"]["to"] == today.isoformat()
    start = date.fromisoformat(body["window"]["from"])
    assert start.day == 1
    assert len(body["churn"]) == 12
    assert body["repeat_purchase"] == {"customers": 0, "repeat_customers": 0, "rate": None}


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("summary", {"from": "2026-03-01", "to": "2026-01-01"}, "query.from"),
        ("summary", {"from": "2000-01-01", "to": "2026-01-01"}, "query.from"),
        ("cohorts", {"from": "yesterday"}, "query.from"),
        ("what-if", {}, "query.retention_uplift"),
        ("what-if", {"retention_uplift": 0}, "query.retention_uplift"),
        ("what-if", {"retention_uplift": 0.1, "retention": 1.5}, "query.retention"),
    ],
)
async def test_bad_queries_are_422(
    client: httpx.AsyncClient,
    reader: dict[str, str],
    path: str,
    params: dict[str, str | float],
    field: str,
) -> None:
    response = await client.get(f"{METRICS}/{path}", params=params, headers=reader)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["field"] == field


async def test_metrics_need_a_token(client: httpx.AsyncClient) -> None:
    assert (await client.get(f"{METRICS}/summary")).status_code == 401
