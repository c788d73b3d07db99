"""Insight: programme totals, one referrer's figures and the leaderboard, over HTTP.

The rows are seeded straight into the referrals schema, so these tests check the
arithmetic of the queries whatever path (attribution, qualification, review) wrote them.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.referrals.models import customers, referrals, rewards
from shared.settings import Settings
from tests.services.referrals.delivery import (
    NOW,
    buy,
    deliver,
    refer,
    refund_event,
)
from tests.services.referrals.delivery import (
    seed_programme as seed_rules,
)

Sessions = async_sessionmaker[AsyncSession]
T0 = datetime(2026, 11, 2, 4, 0, tzinfo=UTC)


async def add_customer(sessions: Sessions, customer_id: uuid.UUID | None = None) -> uuid.UUID:
    customer_id = customer_id or uuid.uuid4()
    async with sessions() as session, session.begin():
        await session.execute(
            customers.insert().values(
                customer_id=customer_id, status="active", signed_up_at=T0, updated_at=T0
            )
        )
    return customer_id


async def add_referral(
    sessions: Sessions,
    referrer: uuid.UUID,
    status: str,
    *,
    at: datetime = T0,
    rewarded: tuple[int, int] | None = None,
    reversed_: bool = False,
) -> uuid.UUID:
    """A referral by `referrer` of a new friend; `rewarded` = (referrer's, referee's) points."""
    referral_id, referee = uuid.uuid4(), uuid.uuid4()
    qualified_at = at + timedelta(days=3) if status in ("qualified", "reversed") else None
    async with sessions() as session, session.begin():
        await session.execute(
            referrals.insert().values(
                id=referral_id,
                referrer_id=referrer,
                referee_id=referee,
                code="ABCDEFGH",
                source="signup",
                status=status,
                flag_reasons=["velocity"] if status in ("flagged", "rejected") else [],
                programme_version=1,
                attributed_at=at,
                qualified_at=qualified_at,
                closed_at=qualified_at,
                created_at=at,
            )
        )
        if rewarded is not None:
            for role, customer, points in (
                ("referrer", referrer, rewarded[0]),
                ("referee", referee, rewarded[1]),
            ):
                await session.execute(
                    rewards.insert().values(
                        id=uuid.uuid4(),
                        referral_id=referral_id,
                        customer_id=customer,
                        role=role,
                        points=points,
                        status="reversed" if reversed_ else "rewarded",
                        rewarded_at=qualified_at,
                        reversed_at=qualified_at + timedelta(days=1)
                        if reversed_ and qualified_at
                        else None,
                    )
                )
    return referral_id


async def seed_programme(sessions: Sessions) -> tuple[uuid.UUID, uuid.UUID]:
    """Aisyah: one of each status (one qualified, one reversed); Somchai: one qualified."""
    aisyah, somchai = await add_customer(sessions), await add_customer(sessions)
    await add_referral(sessions, aisyah, "qualified", rewarded=(500, 200))
    await add_referral(sessions, aisyah, "reversed", rewarded=(500, 200), reversed_=True)
    for status in ("pending", "flagged", "unqualified", "expired", "rejected"):
        await add_referral(sessions, aisyah, status)
    await add_referral(sessions, somchai, "qualified", rewarded=(800, 200))
    return aisyah, somchai


async def get(client: httpx.AsyncClient, url: str, headers: dict[str, str], **params: Any) -> Any:
    response = await client.get(url, params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_stats_of_an_empty_programme_are_zeros(
    client: httpx.AsyncClient, reader: dict[str, str]
) -> None:
    body = await get(client, "/v1/referrals/stats", reader)
    assert body["window"] == {"from": None, "to": None}
    assert set(body["by_status"]) == {
        "pending",
        "flagged",
        "qualified",
        "unqualified",
        "expired",
        "rejected",
        "reversed",
    }
    assert set(body["by_status"].values()) == {0}
    assert (body["attributed"], body["qualified"], body["conversion_rate"]) == (0, 0, None)
    zero = {"count": 0, "points": 0, "reversed_count": 0, "reversed_points": 0, "net_points": 0}
    assert body["rewards"] == {"referrer": zero, "referee": zero}
    assert body["reversed_points"] == 0


async def test_stats_count_statuses_conversion_and_rewards_by_role(
    client: httpx.AsyncClient, reader: dict[str, str], sessions: Sessions
) -> None:
    await seed_programme(sessions)
    body = await get(client, "/v1/referrals/stats", reader)
    assert body["by_status"] == {
        "pending": 1,
        "flagged": 1,
        "qualified": 2,
        "unqualified": 1,
        "expired": 1,
        "rejected": 1,
        "reversed": 1,
    }
    # Eight referrals, one rejected; three ever qualified (the reversed one included).
    assert body["attributed"] == 7
    assert body["qualified"] == 3
    assert body["conversion_rate"] == pytest.approx(3 / 7)
    assert body["rewards"]["referrer"] == {
        "count": 3,
        "points": 1_800,
        "reversed_count": 1,
        "reversed_points": 500,
        "net_points": 1_300,
    }
    assert body["rewards"]["referee"] == {
        "count": 3,
        "points": 600,
        "reversed_count": 1,
        "reversed_points": 200,
        "net_points": 400,
    }
    assert body["reversed_points"] == 700


async def test_the_window_bounds_attribution_from_included_to_excluded(
    client: httpx.AsyncClient, reader: dict[str, str], sessions: Sessions
) -> None:
    referrer = await add_customer(sessions)
    # 2026-11-30T16:00Z is 2026-12-01 00:00 in Kuala Lumpur.
    december = datetime(2026, 11, 30, 16, tzinfo=UTC)
    await add_referral(sessions, referrer, "qualified", at=december - timedelta(seconds=1))
    await add_referral(sessions, referrer, "pending", at=december)
    await add_referral(sessions, referrer, "qualified", at=december + timedelta(days=31))
    body = await get(
        client,
        "/v1/referrals/stats",
        reader,
        **{"from": "2026-12-01T00:00:00+08:00", "to": "2027-01-01T00:00:00+08:00"},
    )
    assert body["window"] == {
        "from": "2026-12-01T00:00:00+08:00",
        "to": "2027-01-01T00:00:00+08:00",
    }
    assert (body["attributed"], body["qualified"], body["by_status"]["pending"]) == (1, 0, 1)
    november = await get(client, "/v1/referrals/stats", reader, to="2026-12-01T00:00:00+08:00")
    assert (november["attributed"], november["qualified"]) == (1, 1)
    later = await get(client, "/v1/referrals/stats", reader, **{"from": "2026-11-30T16:00:00Z"})
    assert (later["attributed"], later["qualified"]) == (2, 1)


@pytest.mark.parametrize(
    "params",
    [
        {"from": "2026-12-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"},
        {"from": "2026-12-02T00:00:00Z", "to": "2026-12-01T00:00:00Z"},
        {"from": "2026-12-01T00:00:00"},
        {"to": "next tuesday"},
    ],
)
@pytest.mark.parametrize(
    "url",
    [
        "/v1/referrals/stats",
        "/v1/referrals/top-referrers",
        "/v1/referrals/referrers/00000000-0000-0000-0000-000000000001/stats",
    ],
)
async def test_a_bad_window_is_a_validation_problem(
    client: httpx.AsyncClient, reader: dict[str, str], url: str, params: dict[str, str]
) -> None:
    response = await client.get(url, params=params, headers=reader)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    fields = {error["field"] for error in response.json()["errors"]}
    assert fields & {"query.from", "query.to"}, fields


async def test_a_referrers_stats(
    client: httpx.AsyncClient, reader: dict[str, str], sessions: Sessions
) -> None:
    aisyah, _ = await seed_programme(sessions)
    body = await get(client, f"/v1/referrals/referrers/{aisyah}/stats", reader)
    assert body == {
        "customer_id": str(aisyah),
        "window": {"from": None, "to": None},
        "invited": 6,
        "pending": 1,
        "flagged": 1,
        "qualified": 2,
        "rewards": 1,
        "points": 500,
        "reversed_points": 500,
    }


async def test_a_referrers_stats_in_a_window(
    client: httpx.AsyncClient, reader: dict[str, str], sessions: Sessions
) -> None:
    referrer = await add_customer(sessions)
    await add_referral(sessions, referrer, "qualified", rewarded=(300, 100))
    await add_referral(sessions, referrer, "pending", at=T0 + timedelta(days=40))
    body = await get(
        client,
        f"/v1/referrals/referrers/{referrer}/stats",
        reader,
        **{"from": (T0 + timedelta(days=1)).isoformat()},
    )
    assert (body["invited"], body["pending"], body["qualified"], body["points"]) == (1, 1, 0, 0)


async def test_a_known_customer_who_invited_nobody_has_zeros(
    client: httpx.AsyncClient, reader: dict[str, str], sessions: Sessions
) -> None:
    customer = await add_customer(sessions)
    body = await get(client, f"/v1/referrals/referrers/{customer}/stats", reader)
    assert (body["invited"], body["qualified"], body["points"]) == (0, 0, 0)


async def test_an_unknown_referrer_is_not_found(
    client: httpx.AsyncClient, reader: dict[str, str]
) -> None:
    response = await client.get(f"/v1/referrals/referrers/{uuid.uuid4()}/stats", headers=reader)
    assert response.status_code == 404
    assert response.json()["type"].endswith("/customer-not-found")


async def test_top_referrers_rank_by_qualified_then_points(
    client: httpx.AsyncClient, reader: dict[str, str], sessions: Sessions
) -> None:
    aisyah, somchai = await seed_programme(sessions)
    mei = await add_customer(sessions)
    await add_referral(sessions, mei, "qualified", rewarded=(900, 200))
    await add_referral(sessions, mei, "qualified", rewarded=(900, 200))
    only_rejected = await add_customer(sessions)
    await add_referral(sessions, only_rejected, "rejected")

    body = await get(client, "/v1/referrals/top-referrers", reader)
    # Mei and Aisyah both have two qualified friends: Mei kept more points. Somchai has one.
    assert body == [
        {"customer_id": str(mei), "invited": 2, "qualified": 2, "points": 1_800},
        {"customer_id": str(aisyah), "invited": 6, "qualified": 2, "points": 500},
        {"customer_id": str(somchai), "invited": 1, "qualified": 1, "points": 800},
    ]
    top = await get(client, "/v1/referrals/top-referrers", reader, limit=1)
    assert [line["customer_id"] for line in top] == [str(mei)]


async def test_top_referrers_in_a_window(
    client: httpx.AsyncClient, reader: dict[str, str], sessions: Sessions
) -> None:
    early, late = await add_customer(sessions), await add_customer(sessions)
    await add_referral(sessions, early, "qualified", rewarded=(500, 100))
    await add_referral(sessions, early, "qualified", rewarded=(500, 100))
    await add_referral(sessions, late, "qualified", at=T0 + timedelta(days=60))
    body = await get(
        client,
        "/v1/referrals/top-referrers",
        reader,
        **{"from": (T0 + timedelta(days=30)).isoformat()},
    )
    assert [line["customer_id"] for line in body] == [str(late)]


@pytest.mark.parametrize("limit", [0, 101, "ten"])
async def test_top_referrers_limit_is_checked(
    client: httpx.AsyncClient, reader: dict[str, str], limit: object
) -> None:
    response = await client.get(
        "/v1/referrals/top-referrers", params={"limit": str(limit)}, headers=reader
    )
    assert response.status_code == 422


async def test_insight_needs_a_token(client: httpx.AsyncClient) -> None:
    for url in (
        "/v1/referrals/stats",
        "/v1/referrals/top-referrers",
        f"/v1/referrals/referrers/{uuid.uuid4()}/stats",
    ):
        assert (await client.get(url)).status_code == 401


async def test_figures_follow_a_referral_through_qualification_and_reversal(
    client: httpx.AsyncClient, reader: dict[str, str], sessions: Sessions, settings: Settings
) -> None:
    await seed_rules(sessions)
    referrer, friend = await refer(sessions, settings, at=NOW - timedelta(days=2))
    purchase = await buy(sessions, settings, friend, 6_000, NOW - timedelta(days=1))

    qualified = await get(client, "/v1/referrals/stats", reader)
    assert (qualified["attributed"], qualified["qualified"]) == (1, 1)
    assert qualified["conversion_rate"] == 1.0
    assert qualified["rewards"]["referrer"]["net_points"] == 300
    assert qualified["rewards"]["referee"]["net_points"] == 100
    mine = await get(client, f"/v1/referrals/referrers/{referrer}/stats", reader)
    assert (mine["invited"], mine["qualified"], mine["rewards"], mine["points"]) == (1, 1, 1, 300)

    await deliver(sessions, settings, refund_event(purchase, 2_000, NOW))
    reversed_ = await get(client, "/v1/referrals/stats", reader)
    assert reversed_["by_status"]["reversed"] == 1
    assert reversed_["qualified"] == 1
    assert reversed_["reversed_points"] == 400
    assert reversed_["rewards"]["referrer"]["net_points"] == 0
    mine = await get(client, f"/v1/referrals/referrers/{referrer}/stats", reader)
    assert (mine["rewards"], mine["points"], mine["reversed_points"]) == (0, 0, 300)
    top = await get(client, "/v1/referrals/top-referrers", reader)
    assert top == [{"customer_id": str(referrer), "invited": 1, "qualified": 1, "points": 0}]
