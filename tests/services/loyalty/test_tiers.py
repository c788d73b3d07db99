"""Tiers: the admin ladder, upgrades at once, downgrades only at review, benefits."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.loyalty import tiers
from services.loyalty.dates import add_months
from services.loyalty.earning import Line, PurchaseFacts, points_for
from services.loyalty.models import members, tier_changes
from services.loyalty.purchases import DEFAULT_RULES


async def define(
    client: httpx.AsyncClient, headers: dict[str, str], name: str, **body: Any
) -> httpx.Response:
    tier = {"rank": 1, "basis": "spend", "threshold": 10_000, "window_days": 730} | body
    return await client.put(f"/v1/loyalty/tiers/{name}", json=tier, headers=headers)


async def buy(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    customer: uuid.UUID,
    total: int,
    when: datetime,
) -> str:
    response = await client.post(
        "/v1/loyalty/purchases",
        json={
            "customer": {"id": str(customer)},
            "order_id": uuid.uuid4().hex,
            "currency": "MYR",
            "total_minor": total,
            "purchased_at": when.isoformat(),
        },
        headers=headers,
    )
    assert response.status_code == 201, response.text
    purchase_id: str = response.json()["purchase_id"]
    return purchase_id


async def tier_events(session: AsyncSession, customer: uuid.UUID) -> list[dict[str, Any]]:
    rows = await session.execute(
        text(
            "SELECT payload FROM loyalty.outbox WHERE event_type = 'tier.changed' AND key = :k"
            " ORDER BY id"
        ),
        {"k": str(customer)},
    )
    return [json.loads(payload)["data"] for (payload,) in rows]


async def member_row(session: AsyncSession, customer: uuid.UUID) -> Any:
    return (await session.execute(select(members).where(members.c.customer_id == customer))).one()


async def test_the_ladder_is_validated_and_listed(
    client: httpx.AsyncClient, admin: dict[str, str], pos: dict[str, str]
) -> None:
    silver = await define(client, admin, "Silver", earn_multiplier="1.25")
    assert silver.status_code == 201, silver.text
    gold = await define(client, admin, "Gold", rank=2, threshold=50_000, discount_percent="5")
    assert gold.status_code == 201
    again = await define(client, admin, "Gold", rank=2, threshold=60_000, discount_percent="5")
    assert again.status_code == 200, "redefining a tier replaces it"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"rank": 2, "threshold": 90_000}, "body.rank"),
        ({"rank": 3, "threshold": 60_000}, "body.threshold"),
        ({"rank": 0, "threshold": 20_000}, "body.threshold"),
        ({"rank": 3, "basis": "visits"}, "basis"),
        ({"rank": 3, "threshold": 90_000, "window_days": 0}, "window_days"),
        ({"rank": 3, "threshold": -1}, "threshold"),
    ]
    for change, field in cases:
        bad = await define(client, admin, "Platinum", **change)
        assert bad.status_code == 422, (change, bad.text)
        assert any(field in error["field"] for error in bad.json()["errors"]), bad.json()
    points_ladder = await define(client, admin, "Club", rank=3, basis="points", threshold=5)
    assert points_ladder.status_code == 201, "thresholds are compared within one basis"
    assert (await define(client, pos, "Platinum", rank=9)).status_code == 403
    listed = (await client.get("/v1/loyalty/tiers", headers=pos)).json()
    assert [(t["name"], t["threshold"]) for t in listed] == [
        ("Silver", 10_000),
        ("Gold", 60_000),
        ("Club", 5),
    ]
    assert Decimal(listed[0]["earn_multiplier"]) == Decimal("1.25")


async def test_upgrade_at_once_downgrade_only_at_review(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    pos: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await define(client, admin, "Silver", threshold=10_000)
    await define(client, admin, "Gold", rank=2, threshold=50_000)
    customer = uuid.uuid4()
    now = datetime.now(UTC).replace(microsecond=0)
    await buy(client, pos, customer, 20_000, now - timedelta(days=3))
    async with sessions() as session, session.begin():
        assert (await member_row(session, customer)).tier == "Silver", "the purchase upgrades"
        assert await tiers.reevaluate(session, customer, now) is None, "nothing more to do"
    big = await buy(client, pos, customer, 40_000, now - timedelta(days=2))
    async with sessions() as session:
        row = await member_row(session, customer)
    assert row.tier == "Gold", "upgrades skip no time"
    assert row.tier_since >= now
    assert row.tier_review_at == add_months(row.tier_since, tiers.REVIEW_PERIOD_MONTHS)

    refund = await client.post(
        f"/v1/loyalty/purchases/{big}/refunds", json={"amount_minor": 40_000}, headers=pos
    )
    assert refund.status_code == 201
    review_at = row.tier_review_at
    async with sessions() as session, session.begin():
        assert await tiers.reevaluate(session, customer, now) is None, "never down here"
        before = review_at - timedelta(seconds=1)
        assert await tiers.review_member(session, customer, before) is None
        assert (await member_row(session, customer)).tier == "Gold"
    assert await tiers.review_due(sessions, review_at - timedelta(seconds=1)) == 0
    assert await tiers.review_due(sessions, review_at) == 1
    async with sessions() as session:
        row = await member_row(session, customer)
        assert (row.tier, row.tier_since) == ("Silver", review_at)
        assert row.tier_review_at == add_months(review_at, tiers.REVIEW_PERIOD_MONTHS)
        events = await tier_events(session, customer)
        history = (
            await session.execute(
                select(tier_changes.c.previous_tier, tier_changes.c.tier, tier_changes.c.reason)
                .where(tier_changes.c.customer_id == customer)
                .order_by(tier_changes.c.id)
            )
        ).all()
    assert [(e["previous_tier"], e["tier"], e["direction"]) for e in events] == [
        (None, "Silver", "up"),
        ("Silver", "Gold", "up"),
        ("Gold", "Silver", "down"),
    ]
    assert [tuple(h) for h in history] == [
        (None, "Silver", "qualified"),
        ("Silver", "Gold", "qualified"),
        ("Gold", "Silver", "review"),
    ]
    assert await tiers.review_due(sessions, review_at) == 0, "a rerun changes nothing"


async def test_review_renews_a_member_who_still_qualifies_and_drops_one_who_does_not(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    pos: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await define(client, admin, "Silver", threshold=10_000, window_days=30)
    now = datetime.now(UTC).replace(microsecond=0)
    keeper, leaver = uuid.uuid4(), uuid.uuid4()
    since = {}
    for customer in (keeper, leaver):
        await buy(client, pos, customer, 10_000, now - timedelta(days=1))
        async with sessions() as session:
            row = await member_row(session, customer)
        assert row.tier == "Silver", "the purchase upgrades at once"
        since[customer] = row.tier_since
    review_at = add_months(max(since.values()), tiers.REVIEW_PERIOD_MONTHS)
    await buy(client, pos, keeper, 10_000, now)  # the till accepts up to now: keeps qualifying
    async with sessions() as session, session.begin():
        # Move the keeper's latest purchase into the window before the review.
        await session.execute(
            text(
                "UPDATE loyalty.purchases SET purchased_at = :t"
                " WHERE customer_id = :c AND purchased_at = :n"
            ),
            {"t": review_at - timedelta(days=1), "c": keeper, "n": now},
        )
    assert await tiers.review_due(sessions, review_at) == 1
    async with sessions() as session:
        kept = await member_row(session, keeper)
        dropped = await member_row(session, leaver)
        assert (await tier_events(session, leaver))[-1]["direction"] == "down"
        assert len(await tier_events(session, keeper)) == 1, "a renewal is not a change"
    assert (kept.tier, kept.tier_since) == ("Silver", since[keeper])
    assert kept.tier_review_at == add_months(
        add_months(since[keeper], tiers.REVIEW_PERIOD_MONTHS), tiers.REVIEW_PERIOD_MONTHS
    )
    assert (dropped.tier, dropped.tier_since, dropped.tier_review_at) == (None, None, None)


async def test_benefits_and_the_tier_multiplier_in_earning(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    pos: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await define(client, admin, "Gold", earn_multiplier="1.5", discount_percent="5")
    async with sessions() as session:
        assert await tiers.benefits(session, "Gold") == (Decimal("1.5"), Decimal(5))
        assert await tiers.benefits(session, None) == (Decimal(1), Decimal(0))
        assert await tiers.benefits(session, "Gone") == (Decimal(1), Decimal(0))
        rules = await tiers.with_tier_multipliers(
            session, DEFAULT_RULES.model_copy(update={"tier_multipliers": {"Old": Decimal(2)}})
        )
    assert rules.tier_multipliers == {"Old": Decimal(2), "Gold": Decimal("1.5")}
    facts = PurchaseFacts(
        currency="MYR",
        total_minor=10_000,
        lines=[Line(sku="X", quantity=1, unit_price_minor=10_000)],
        purchased_at=datetime.now(UTC),
    )
    assert points_for(facts, rules, tier="Gold") == 150

    customer = uuid.uuid4()
    await buy(client, pos, customer, 12_000, datetime.now(UTC) - timedelta(minutes=1))
    async with sessions() as session, session.begin():
        await tiers.reevaluate(session, customer, datetime.now(UTC))
    view = await client.get(f"/v1/loyalty/members/{customer}/tier", headers=pos)
    assert view.status_code == 200, view.text
    body = view.json()
    assert body["tier"] == "Gold"
    assert Decimal(body["discount_percent"]) == 5
    assert body["progress"] == {"Gold": 12_000}
    missing = await client.get(f"/v1/loyalty/members/{uuid.uuid4()}/tier", headers=pos)
    assert missing.status_code == 404
