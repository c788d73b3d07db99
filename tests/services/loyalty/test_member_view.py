"""The till's one call: a purchase stamps cards, lifts the tier at once, and the member
view shows points, benefits, stamp progress and the rewards the member can afford."""

from __future__ import annotations

import uuid

import httpx

BEANS = {"sku": "BEANS", "category": "retail", "quantity": 1, "unit_price_minor": 22_000}


async def test_purchase_feeds_tier_stamps_and_the_member_view(
    client: httpx.AsyncClient, admin: dict[str, str], pos: dict[str, str]
) -> None:
    gold = {
        "rank": 2,
        "basis": "spend",
        "threshold": 20_000,
        "window_days": 365,
        "earn_multiplier": "2",
        "discount_percent": "10",
    }
    assert (await client.put("/v1/loyalty/tiers/gold", json=gold, headers=admin)).status_code == 201
    card = {
        "name": "Coffee card",
        "categories": ["coffee"],
        "stamps_required": 5,
        "reward_description": "One free coffee",
    }
    assert (
        await client.post("/v1/loyalty/stamp-cards", json=card, headers=admin)
    ).status_code == 201
    reward = {"name": "Free latte", "points_cost": 150}
    assert (await client.post("/v1/loyalty/rewards", json=reward, headers=admin)).status_code == 201

    customer = str(uuid.uuid4())
    coffee = [{"sku": "LATTE", "category": "coffee", "quantity": 3, "unit_price_minor": 1000}]
    first = await client.post(
        "/v1/loyalty/purchases",
        json={
            "customer": {"id": customer},
            "order_id": "O-1",
            "currency": "MYR",
            "total_minor": 25_000,
            "lines": [*coffee, BEANS],
        },
        headers=pos,
    )
    assert first.status_code == 201, first.text
    assert first.json()["points"] == 250, "the upgrade applies from the next purchase"

    member = (await client.get(f"/v1/loyalty/members/{customer}", headers=pos)).json()
    assert member["tier"] == "gold", "spend over the threshold upgrades at once"
    assert member["privilege_discount_percent"] == "10.00"
    assert [(c["name"], c["stamps"], c["stamps_required"]) for c in member["stamp_cards"]] == [
        ("Coffee card", 3, 5)
    ]
    assert [r["name"] for r in member["affordable_rewards"]] == ["Free latte"]

    second = await client.post(
        "/v1/loyalty/purchases",
        json={
            "customer": {"id": customer},
            "order_id": "O-2",
            "currency": "MYR",
            "total_minor": 3_000,
            "lines": coffee,
        },
        headers=pos,
    )
    assert second.json()["points"] == 60, "gold earns double"
    member = (await client.get(f"/v1/loyalty/members/{customer}", headers=pos)).json()
    cards = member["stamp_cards"]
    assert [c["stamps"] for c in cards if c["completed_at"] is None] == [1], "overflow carries"
    assert any(c["voucher_code"] for c in cards if c["completed_at"] is not None)
