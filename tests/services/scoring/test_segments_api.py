"""Segments: CRUD, validation on save, membership kept set-wise and per customer, events."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scoring import segments
from services.scoring.handlers import handlers
from services.scoring.models import customers, segment_members
from shared.events.envelope import Event
from shared.events.loyalty import TierChanged
from shared.events.purchases import PurchaseCompleted, PurchaseRefunded
from shared.settings import Settings

SEGMENTS = "/v1/scoring/segments"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
AT_RISK = 'churn_risk >= 0.6 and clv >= 500 and tier in ["gold"]'

Sessions = async_sessionmaker[AsyncSession]


async def seed(sessions: Sessions, *people: dict[str, Any]) -> list[uuid.UUID]:
    """Insert customers (active, scored as given) with SQL; their ids in order."""
    ids = [uuid.uuid4() for _ in people]
    rows = [
        {"customer_id": customer_id, "status": "active", "updated_at": NOW} | person
        for customer_id, person in zip(ids, people, strict=True)
    ]
    async with sessions() as session, session.begin():
        await session.execute(customers.insert(), rows)
    return ids


async def segment_events(sessions: Sessions) -> list[tuple[str, str, str]]:
    """(type, customer id, segment name) of the segment events in the outbox, in order."""
    async with sessions() as session:
        rows = await session.execute(
            text(
                "SELECT event_type, payload FROM scoring.outbox"
                " WHERE event_type LIKE 'segment.%' ORDER BY id"
            )
        )
        out = []
        for event_type, payload in rows:
            data = json.loads(payload)["data"]
            out.append((event_type, data["customer_id"], data["segment_name"]))
        return out


async def member_ids(sessions: Sessions, segment_id: str) -> set[str]:
    async with sessions() as session:
        found = await session.execute(
            select(segment_members.c.customer_id).where(
                segment_members.c.segment_id == uuid.UUID(segment_id)
            )
        )
        return {str(customer_id) for customer_id in found.scalars()}


async def create(
    client: httpx.AsyncClient, admin: dict[str, str], name: str, rule: str
) -> dict[str, Any]:
    response = await client.post(SEGMENTS, json={"name": name, "rule": rule}, headers=admin)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_saving_a_segment_fills_it_and_publishes_entries(
    client: httpx.AsyncClient, admin: dict[str, str], reader: dict[str, str], sessions: Sessions
) -> None:
    vip, *_others = await seed(
        sessions,
        {"churn_risk": 0.7, "clv": 800.0, "tier": "gold"},
        {"churn_risk": 0.7, "clv": 800.0, "tier": "silver"},
        {"churn_risk": 0.1, "clv": 900.0, "tier": "gold"},
        {"churn_risk": 0.9, "clv": 900.0, "tier": "gold", "status": "merged"},
    )
    body = await create(client, admin, "Slipping VIPs", AT_RISK)
    assert body["members"] == 1
    assert body["rule"] == AT_RISK
    assert await member_ids(sessions, body["id"]) == {str(vip)}
    assert await segment_events(sessions) == [("segment.entered", str(vip), "Slipping VIPs")]

    got = await client.get(f"{SEGMENTS}/{body['id']}", headers=reader)
    assert got.status_code == 200
    assert got.json() | {"members": 1} == body
    listed = await client.get(SEGMENTS, headers=reader)
    assert [s["name"] for s in listed.json()["items"]] == ["Slipping VIPs"]


async def test_rule_errors_are_422_with_position_and_save_nothing(
    client: httpx.AsyncClient, admin: dict[str, str], reader: dict[str, str]
) -> None:
    cases = [
        ("clv_12m >= 500", "unknown-attribute", 0),
        ('churn_risk >= "high"', "type-mismatch", 14),
        ("churn_risk >= 0.6 and", "syntax", 21),
    ]
    for rule, kind, position in cases:
        response = await client.post(SEGMENTS, json={"name": "x", "rule": rule}, headers=admin)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        [error] = response.json()["errors"]
        assert (error["field"], error["type"], error["position"]) == ("body.rule", kind, position)
        assert f"position {position}" in response.json()["detail"]
    assert (await client.get(SEGMENTS, headers=reader)).json()["items"] == []
    refused = await client.post(SEGMENTS, json={"name": "x", "rule": "orders > 1"}, headers=reader)
    assert refused.status_code == 403


async def test_names_are_unique_and_unknown_segments_are_404(
    client: httpx.AsyncClient, admin: dict[str, str], reader: dict[str, str]
) -> None:
    first = await create(client, admin, "Regulars", "orders >= 3")
    second = await create(client, admin, "Newcomers", "orders == 1")
    again = await client.post(
        SEGMENTS, json={"name": "Regulars", "rule": "orders > 1"}, headers=admin
    )
    assert again.status_code == 409
    renamed = await client.put(
        f"{SEGMENTS}/{second['id']}", json={"name": "Regulars", "rule": "orders > 1"}, headers=admin
    )
    assert renamed.status_code == 409
    missing = uuid.uuid4()
    for method in ("GET", "DELETE"):
        response = await client.request(method, f"{SEGMENTS}/{missing}", headers=admin)
        assert response.status_code == 404, method
    put = await client.put(
        f"{SEGMENTS}/{missing}", json={"name": "N", "rule": "orders > 1"}, headers=admin
    )
    assert put.status_code == 404
    members = await client.get(f"{SEGMENTS}/{missing}/members", headers=reader)
    assert members.status_code == 404
    kept = await client.get(f"{SEGMENTS}/{first['id']}", headers=reader)
    assert kept.json()["rule"] == "orders >= 3"


async def test_changing_the_rule_moves_members_with_events(
    client: httpx.AsyncClient, admin: dict[str, str], reader: dict[str, str], sessions: Sessions
) -> None:
    one, two, three = await seed(sessions, {"orders": 1}, {"orders": 2}, {"orders": 3})
    segment = await create(client, admin, "Repeaters", "orders >= 2")
    assert await member_ids(sessions, segment["id"]) == {str(two), str(three)}
    changed = await client.put(
        f"{SEGMENTS}/{segment['id']}",
        json={"name": "Loyal", "rule": "orders <= 2", "description": "Few orders."},
        headers=admin,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["members"] == 2
    assert changed.json()["description"] == "Few orders."
    assert await member_ids(sessions, segment["id"]) == {str(one), str(two)}
    events = await segment_events(sessions)
    assert sorted(events[2:]) == sorted(
        [("segment.entered", str(one), "Loyal"), ("segment.exited", str(three), "Loyal")]
    )
    renamed_only = await client.put(
        f"{SEGMENTS}/{segment['id']}", json={"name": "Few", "rule": "orders <= 2"}, headers=admin
    )
    assert renamed_only.status_code == 200
    assert len(await segment_events(sessions)) == len(events)

    deleted = await client.delete(f"{SEGMENTS}/{segment['id']}", headers=admin)
    assert deleted.status_code == 204
    exits = (await segment_events(sessions))[len(events) :]
    assert sorted(exits) == sorted(
        [("segment.exited", str(one), "Few"), ("segment.exited", str(two), "Few")]
    )
    assert (await client.get(f"{SEGMENTS}/{segment['id']}", headers=reader)).status_code == 404


async def test_evaluate_customers_follows_score_changes(
    client: httpx.AsyncClient, admin: dict[str, str], sessions: Sessions
) -> None:
    alice, bob = await seed(
        sessions,
        {"churn_risk": 0.2, "clv": 800.0, "tier": "gold"},
        {"churn_risk": 0.8, "clv": 800.0, "tier": "gold"},
    )
    segment = await create(client, admin, "Slipping VIPs", AT_RISK)
    await create(client, admin, "Gold", 'tier == "gold"')
    before = await segment_events(sessions)

    async with sessions() as session, session.begin():
        await session.execute(
            update(customers).where(customers.c.customer_id == alice).values(churn_risk=0.75)
        )
        await session.execute(
            update(customers).where(customers.c.customer_id == bob).values(churn_risk=0.1)
        )
        await segments.evaluate_customers(session, [alice, bob], now=NOW)
    assert await member_ids(sessions, segment["id"]) == {str(alice)}
    assert (await segment_events(sessions))[len(before) :] == [
        ("segment.entered", str(alice), "Slipping VIPs"),
        ("segment.exited", str(bob), "Slipping VIPs"),
    ]

    # Evaluating again changes nothing and publishes nothing.
    async with sessions() as session, session.begin():
        await segments.evaluate_customers(session, [alice, bob, alice], now=NOW)
    assert len(await segment_events(sessions)) == len(before) + 2

    # A merged-away customer, and one whose row is gone, leave every segment.
    async with sessions() as session, session.begin():
        await session.execute(
            update(customers).where(customers.c.customer_id == alice).values(status="merged")
        )
        await session.execute(customers.delete().where(customers.c.customer_id == bob))
        await segments.evaluate_customers(session, [alice, bob], now=NOW)
    assert sorted((await segment_events(sessions))[len(before) + 2 :]) == sorted(
        [
            ("segment.exited", str(alice), "Gold"),
            ("segment.exited", str(alice), "Slipping VIPs"),
            ("segment.exited", str(bob), "Gold"),
        ]
    )


async def test_set_wise_and_per_customer_evaluation_agree(
    client: httpx.AsyncClient, admin: dict[str, str], sessions: Sessions
) -> None:
    people = [
        {
            "churn_risk": (i % 10) / 10,
            "clv": float(i * 37 % 1000),
            "tier": ["gold", "silver", None][i % 3],
            "orders": i % 6,
            "rfm_segment": ["Champions", "At risk", None, "Lost"][i % 4],
            "last_purchase_at": None if i % 7 == 0 else datetime(2026, 1 + i % 10, 5, tzinfo=UTC),
        }
        for i in range(120)
    ]
    ids = await seed(sessions, *people)
    rules = [
        AT_RISK,
        'not (tier == "gold") and orders >= 2',
        'rfm_segment in ["Champions", "At risk"] or churn_risk < 0.2',
        "days_since_last_purchase > 200 or last_purchase_at == null",
    ]
    created = [await create(client, admin, f"S{n}", rule) for n, rule in enumerate(rules)]
    set_wise = {s["id"]: await member_ids(sessions, s["id"]) for s in created}
    assert all(0 < len(found) < len(ids) for found in set_wise.values())

    async with sessions() as session, session.begin():
        await session.execute(segment_members.delete())
    now = datetime.now(UTC)  # the routes evaluated `days_since_last_purchase` at about now
    async with sessions() as session, session.begin():
        await segments.evaluate_customers(session, ids, now=now)
    per_customer = {s["id"]: await member_ids(sessions, s["id"]) for s in created}
    assert per_customer == set_wise


async def test_members_are_paged_with_an_opaque_cursor(
    client: httpx.AsyncClient, admin: dict[str, str], reader: dict[str, str], sessions: Sessions
) -> None:
    ids = await seed(sessions, *({"orders": 2} for _ in range(7)), {"orders": 0})
    segment = await create(client, admin, "Buyers", "orders > 0")
    url = f"{SEGMENTS}/{segment['id']}/members"
    seen: list[str] = []
    sizes = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = await client.get(url, params=params, headers=reader)
        assert page.status_code == 200, page.text
        body = page.json()
        sizes.append(len(body["items"]))
        seen += [item["customer_id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert str(uuid.UUID(seen[-1])) not in cursor  # opaque, not the raw id
    assert sizes == [3, 3, 1]
    assert seen == sorted(str(i) for i in ids[:7])
    for bad in ("not-a-cursor!", "Zm9v"):
        refused = await client.get(url, params={"cursor": bad}, headers=reader)
        assert refused.status_code == 422, bad
        assert refused.json()["errors"][0]["field"] == "query.cursor"


async def test_segments_list_is_paged(
    client: httpx.AsyncClient, admin: dict[str, str], reader: dict[str, str]
) -> None:
    for name in ("c", "a", "b"):
        await create(client, admin, name, "orders > 0")
    first = (await client.get(SEGMENTS, params={"limit": 2}, headers=reader)).json()
    assert [s["name"] for s in first["items"]] == ["a", "b"]
    rest = await client.get(
        SEGMENTS, params={"limit": 2, "cursor": first["next_cursor"]}, headers=reader
    )
    assert [s["name"] for s in rest.json()["items"]] == ["c"]
    assert rest.json()["next_cursor"] is None
    attributes = (await client.get(f"{SEGMENTS}/attributes", headers=reader)).json()
    assert {"name": "churn_risk", "type": "number"} in attributes


async def test_events_move_customers_through_segments(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    settings: Settings,
    sessions: Sessions,
) -> None:
    """End to end in the service: a tier change, a purchase, a refund, each rescored."""

    async def deliver(event: Event) -> None:
        async with sessions() as session, session.begin():
            await handlers(settings)[type(event)](session, event, event.to_envelope(source="t"))

    await create(client, admin, "Gold buyers", 'tier == "gold" and orders >= 1')
    customer = uuid.uuid4()
    now = datetime.now(UTC)
    await deliver(
        TierChanged(
            customer_id=customer, previous_tier=None, tier="gold", direction="up", changed_at=now
        )
    )
    assert await segment_events(sessions) == []
    sale = PurchaseCompleted(
        purchase_id=uuid.uuid4(),
        customer_id=customer,
        order_id="O-1",
        currency="MYR",
        total_minor=5_000,
        purchased_at=now,
    )
    await deliver(sale)
    await deliver(sale)  # redelivered: counted once, no second entry
    assert await segment_events(sessions) == [("segment.entered", str(customer), "Gold buyers")]
    await deliver(
        PurchaseRefunded(
            refund_id=uuid.uuid4(),
            purchase_id=sale.purchase_id,
            customer_id=customer,
            currency="MYR",
            amount_minor=5_000,
            refunded_at=now,
        )
    )
    assert (await segment_events(sessions))[1:] == [
        ("segment.exited", str(customer), "Gold buyers")
    ]
