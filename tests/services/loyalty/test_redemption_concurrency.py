"""Concurrent redemptions against one balance: exactly the affordable number succeed."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx

from tests.services.loyalty.test_purchases_api import ledger_is_consistent
from tests.services.loyalty.test_rewards_api import REDEMPTIONS, REWARDS, available, member_with


async def test_hundred_concurrent_point_payments(
    client: httpx.AsyncClient, pos: dict[str, str], database_url: str
) -> None:
    customer = await member_with(client, pos, 1000)
    body = {"customer_id": customer, "points": 30, "amount_minor": 300, "currency": "MYR"}
    responses = await asyncio.gather(
        *(client.post(REDEMPTIONS, json=body, headers=pos) for _ in range(100))
    )
    statuses = Counter(response.status_code for response in responses)
    assert statuses == {201: 33, 409: 67}, [r.text for r in responses if r.status_code >= 500]
    refused = [r.json() for r in responses if r.status_code == 409]
    assert all(p["type"].endswith("/insufficient-points") for p in refused)
    codes = {r.json()["voucher_code"] for r in responses if r.status_code == 201}
    assert len(codes) == 33
    assert await available(client, pos, customer) == 10
    await ledger_is_consistent(database_url)


async def test_concurrent_members_share_scarce_stock(
    client: httpx.AsyncClient, admin: dict[str, str], pos: dict[str, str], database_url: str
) -> None:
    members = [await member_with(client, pos, 100) for _ in range(12)]
    created = await client.post(
        REWARDS, json={"name": "Limited tumbler", "points_cost": 40, "stock": 5}, headers=admin
    )
    reward_id = created.json()["id"]
    # Each member asks three times: balances allow two each, stock allows five in all.
    responses = await asyncio.gather(
        *(
            client.post(
                REDEMPTIONS, json={"customer_id": member, "reward_id": reward_id}, headers=pos
            )
            for member in members * 3
        )
    )
    statuses = Counter(response.status_code for response in responses)
    assert statuses[201] == 5 and statuses[409] == 31, statuses
    stock = (await client.get(f"{REWARDS}/{reward_id}", headers=pos)).json()["stock"]
    assert stock == 0
    left = [await available(client, pos, member) for member in members]
    assert sum(100 - points for points in left) == 5 * 40
    assert min(left) >= 0
    await ledger_is_consistent(database_url)


async def test_concurrent_confirm_and_release_settle_once(
    client: httpx.AsyncClient, pos: dict[str, str], database_url: str
) -> None:
    customer = await member_with(client, pos, 100)
    ids = []
    for _ in range(10):
        reserved = await client.post(
            REDEMPTIONS, json={"customer_id": customer, "points": 10}, headers=pos
        )
        ids.append(reserved.json()["id"])
    calls = [
        client.post(f"{REDEMPTIONS}/{redemption_id}/{action}", headers=pos)
        for redemption_id in ids
        for action in ("confirm", "release", "release", "confirm")
    ]
    responses = await asyncio.gather(*calls)
    assert all(r.status_code in (200, 409) for r in responses), [r.text for r in responses]
    final = [
        (await client.get(f"{REDEMPTIONS}/{redemption_id}", headers=pos)).json()["status"]
        for redemption_id in ids
    ]
    released = final.count("released")
    assert released + final.count("confirmed") == 10
    assert await available(client, pos, customer) == released * 10
    await ledger_is_consistent(database_url)
