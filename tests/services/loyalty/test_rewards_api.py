"""The rewards catalogue and redemptions: reserve, confirm, release, expire, and the limits."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.loyalty import rewards
from services.loyalty.redemption_jobs import release_expired_reservations
from shared.db.engine import create_engine
from shared.settings import Settings
from tests.services.loyalty.test_purchases_api import ledger_is_consistent, purchase

REWARDS = "/v1/loyalty/rewards"
REDEMPTIONS = "/v1/loyalty/redemptions"


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


async def sql(engine: AsyncEngine, statement: str, **params: Any) -> list[Any]:
    async with engine.begin() as connection:
        result = await connection.execute(text(statement), params)
        return list(result.all()) if result.returns_rows else []


async def member_with(client: httpx.AsyncClient, pos: dict[str, str], points: int) -> str:
    """A new member holding `points` available points (1 point per MYR 1)."""
    customer = str(uuid.uuid4())
    bought = await purchase(
        client, pos, {"id": customer}, order_id=f"O-{customer}", total_minor=points * 100
    )
    assert bought.status_code == 201, bought.text
    assert bought.json()["available"] == points
    return customer


async def new_reward(client: httpx.AsyncClient, admin: dict[str, str], **fields: Any) -> str:
    body = {"name": "Free latte", "points_cost": 30} | fields
    response = await client.post(REWARDS, json=body, headers=admin)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def available(client: httpx.AsyncClient, headers: dict[str, str], customer: str) -> int:
    member = await client.get(f"/v1/loyalty/members/{customer}", headers=headers)
    return int(member.json()["available"])


async def events(engine: AsyncEngine) -> list[str]:
    rows = await sql(engine, "SELECT event_type FROM loyalty.outbox ORDER BY id")
    return [row[0] for row in rows if row[0] in ("points.redeemed", "reward.issued")]


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "points_cost": 0},
        {"name": "", "points_cost": 10},
        {"name": "x", "points_cost": 10, "stock": -1},
        {"name": "x", "points_cost": 10, "valid_days": 0},
        {"name": "x", "points_cost": 10, "tiers": []},
        {"name": "x", "points_cost": 10, "per_member_limit": 0},
        {"name": "x", "points_cost": 10, "surprise": True},
    ],
)
async def test_catalogue_validation(
    client: httpx.AsyncClient, admin: dict[str, str], body: dict[str, Any]
) -> None:
    response = await client.post(REWARDS, json=body, headers=admin)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"


async def test_catalogue_crud_and_scopes(
    client: httpx.AsyncClient, admin: dict[str, str], pos: dict[str, str]
) -> None:
    assert (
        await client.post(REWARDS, json={"name": "x", "points_cost": 1}, headers=pos)
    ).status_code == 403
    reward_id = await new_reward(client, admin, stock=5, tiers=["gold"], per_member_limit=2)
    other = await new_reward(client, admin, name="Tote bag", points_cost=500, active=False)
    listed = (await client.get(REWARDS, headers=pos)).json()
    assert {r["id"] for r in listed} == {reward_id, other}
    active = (await client.get(REWARDS, params={"active": "true"}, headers=pos)).json()
    assert [r["id"] for r in active] == [reward_id]
    first = (await client.get(REWARDS, params={"limit": 1}, headers=pos)).json()
    rest = (await client.get(REWARDS, params={"after": first[0]["id"]}, headers=pos)).json()
    assert len(first) == 1 and len(rest) == 1 and rest[0]["id"] != first[0]["id"]
    patched = await client.patch(
        f"{REWARDS}/{reward_id}",
        json={"stock": None, "points_cost": 40, "active": False},
        headers=admin,
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert (body["stock"], body["points_cost"], body["active"]) == (None, 40, False)
    assert body["tiers"] == ["gold"] and body["per_member_limit"] == 2, "untouched fields stay"
    null_cost = await client.patch(
        f"{REWARDS}/{reward_id}", json={"points_cost": None}, headers=admin
    )
    assert null_cost.status_code == 422
    missing = await client.get(f"{REWARDS}/{uuid.uuid4()}", headers=pos)
    assert missing.status_code == 404


async def test_reserve_confirm_and_voucher_lookup(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    pos: dict[str, str],
    engine: AsyncEngine,
    database_url: str,
) -> None:
    customer = await member_with(client, pos, 100)
    reward_id = await new_reward(client, admin, valid_days=7)
    reserved = await client.post(
        REDEMPTIONS, json={"customer_id": customer, "reward_id": reward_id}, headers=pos
    )
    assert reserved.status_code == 201, reserved.text
    body = reserved.json()
    assert (body["status"], body["points"], body["kind"]) == ("reserved", 30, "reward")
    assert body["store_id"] == "kl-01", "the store comes from the POS token"
    code = body["voucher_code"]
    assert len(code) == rewards.VOUCHER_LENGTH and set(code) <= set(rewards.VOUCHER_ALPHABET)
    assert await available(client, pos, customer) == 70, "reserved points are not spendable"
    scanned = await client.get(f"/v1/loyalty/vouchers/{code[:5].lower()}-{code[5:]}", headers=pos)
    assert scanned.status_code == 200 and scanned.json()["id"] == body["id"]
    url = f"{REDEMPTIONS}/{body['id']}"
    confirmed = await client.post(f"{url}/confirm", json={"order_ref": "S-9"}, headers=pos)
    assert confirmed.status_code == 200, confirmed.text
    assert (confirmed.json()["status"], confirmed.json()["order_ref"]) == ("confirmed", "S-9")
    again = await client.post(f"{url}/confirm", headers=pos)
    assert again.status_code == 200 and again.json()["status"] == "confirmed", "idempotent"
    refused = await client.post(f"{url}/release", headers=pos)
    assert refused.status_code == 409
    assert refused.json()["type"].endswith("/redemption-confirmed")
    assert await available(client, pos, customer) == 70
    assert (await client.get(url, headers=pos)).json()["status"] == "confirmed"
    assert await events(engine) == ["points.redeemed", "points.redeemed", "reward.issued"]
    await ledger_is_consistent(database_url)


async def test_release_gives_points_and_stock_back(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    pos: dict[str, str],
    engine: AsyncEngine,
    database_url: str,
) -> None:
    customer = await member_with(client, pos, 100)
    reward_id = await new_reward(client, admin, stock=1)
    reserved = (
        await client.post(
            REDEMPTIONS, json={"customer_id": customer, "reward_id": reward_id}, headers=pos
        )
    ).json()
    assert (await client.get(f"{REWARDS}/{reward_id}", headers=pos)).json()["stock"] == 0
    url = f"{REDEMPTIONS}/{reserved['id']}"
    released = await client.post(f"{url}/release", headers=pos)
    assert released.status_code == 200, released.text
    assert released.json()["status"] == "released"
    again = await client.post(f"{url}/release", headers=pos)
    assert again.status_code == 200 and again.json()["status"] == "released", "idempotent"
    assert (await client.post(f"{url}/confirm", headers=pos)).status_code == 409
    assert await available(client, pos, customer) == 100
    assert (await client.get(f"{REWARDS}/{reward_id}", headers=pos)).json()["stock"] == 1
    # The points came back expiring with the lot they were taken from.
    lots = await sql(
        engine,
        "SELECT expires_at FROM loyalty.lots WHERE customer_id = :c ORDER BY id",
        c=uuid.UUID(customer),
    )
    assert len(lots) == 2 and lots[0][0] == lots[1][0] is not None
    await ledger_is_consistent(database_url)


async def test_points_as_payment(
    client: httpx.AsyncClient, pos: dict[str, str], database_url: str
) -> None:
    customer = await member_with(client, pos, 100)
    body = {"customer_id": customer, "points": 60, "amount_minor": 600, "currency": "MYR"}
    paid = await client.post(REDEMPTIONS, json=body, headers=pos)
    assert paid.status_code == 201, paid.text
    assert (paid.json()["kind"], paid.json()["amount_minor"]) == ("payment", 600)
    assert paid.json()["valid_until"] is None
    assert await available(client, pos, customer) == 40
    for bad in (
        {"customer_id": customer},
        {"customer_id": customer, "points": 5, "reward_id": str(uuid.uuid4())},
        {"customer_id": customer, "points": 5, "amount_minor": 50},
        {"customer_id": customer, "points": 0},
    ):
        assert (await client.post(REDEMPTIONS, json=bad, headers=pos)).status_code == 422
    other_store = await client.post(REDEMPTIONS, json=body | {"store_id": "pg-02"}, headers=pos)
    assert other_store.status_code == 403
    await ledger_is_consistent(database_url)


async def test_insufficient_points_is_409_and_writes_nothing(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    pos: dict[str, str],
    engine: AsyncEngine,
) -> None:
    customer = await member_with(client, pos, 20)
    reward_id = await new_reward(client, admin, stock=3)
    refused = await client.post(
        REDEMPTIONS, json={"customer_id": customer, "reward_id": reward_id}, headers=pos
    )
    assert refused.status_code == 409, refused.text
    problem = refused.json()
    assert problem["type"].endswith("/insufficient-points")
    assert (problem["available"], problem["wanted"]) == (20, 30)
    assert await sql(engine, "SELECT id FROM loyalty.redemptions") == []
    kinds = await sql(engine, "SELECT kind FROM loyalty.ledger")
    assert [k for (k,) in kinds] == ["earn"]
    assert (await client.get(f"{REWARDS}/{reward_id}", headers=pos)).json()["stock"] == 3
    assert await events(engine) == []
    unknown = await client.post(
        REDEMPTIONS, json={"customer_id": str(uuid.uuid4()), "points": 1}, headers=pos
    )
    assert unknown.status_code == 404
    assert await sql(engine, "SELECT count(*) FROM loyalty.members") == [(1,)]


async def test_stock_limit_tier_and_inactive_rewards(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    pos: dict[str, str],
    engine: AsyncEngine,
    database_url: str,
) -> None:
    customer = await member_with(client, pos, 1000)
    other = await member_with(client, pos, 1000)

    async def redeem(who: str, reward: str) -> httpx.Response:
        return await client.post(
            REDEMPTIONS, json={"customer_id": who, "reward_id": reward}, headers=pos
        )

    scarce = await new_reward(client, admin, name="Mug", stock=2)
    assert (await redeem(customer, scarce)).status_code == 201
    assert (await redeem(other, scarce)).status_code == 201
    sold_out = await redeem(customer, scarce)
    assert sold_out.status_code == 409 and sold_out.json()["type"].endswith("/out-of-stock")

    limited = await new_reward(client, admin, name="Cake", per_member_limit=2)
    first = (await redeem(customer, limited)).json()
    assert (await redeem(customer, limited)).status_code == 201
    over = await redeem(customer, limited)
    assert over.status_code == 409 and over.json()["type"].endswith("/limit-reached")
    assert (await redeem(other, limited)).status_code == 201, "the limit is per member"
    await client.post(f"{REDEMPTIONS}/{first['id']}/release", headers=pos)
    assert (await redeem(customer, limited)).status_code == 201, "released ones do not count"

    gold_only = await new_reward(client, admin, name="Lounge", tiers=["gold", "platinum"])
    not_gold = await redeem(customer, gold_only)
    assert not_gold.status_code == 409 and not_gold.json()["type"].endswith("/tier-not-eligible")
    await sql(
        engine,
        "UPDATE loyalty.members SET tier = 'gold' WHERE customer_id = :c",
        c=uuid.UUID(customer),
    )
    assert (await redeem(customer, gold_only)).status_code == 201

    retired = await new_reward(client, admin, name="Old", active=False)
    assert (await redeem(customer, retired)).status_code == 409
    assert (await redeem(customer, str(uuid.uuid4()))).status_code == 404
    await ledger_is_consistent(database_url)


async def test_affordable_rewards(
    client: httpx.AsyncClient, admin: dict[str, str], pos: dict[str, str], engine: AsyncEngine
) -> None:
    customer = await member_with(client, pos, 100)
    cheap = await new_reward(client, admin, name="Cookie", points_cost=10, per_member_limit=1)
    await new_reward(client, admin, name="Latte", points_cost=30, stock=0)
    mid = await new_reward(client, admin, name="Sandwich", points_cost=50)
    await new_reward(client, admin, name="Bag", points_cost=500)
    await new_reward(client, admin, name="Off", points_cost=5, active=False)
    gold = await new_reward(client, admin, name="Gold tea", points_cost=20, tiers=["gold"])
    sessions = async_sessionmaker(engine, class_=AsyncSession)

    async def names(tier: str | None, points: int) -> list[str]:
        async with sessions() as session:
            found = await rewards.affordable_rewards(
                session, uuid.UUID(customer), tier, points, datetime.now(UTC)
            )
        return [str(reward.id) for reward in found]

    assert await names(None, 100) == [cheap, mid]
    assert await names("gold", 100) == [cheap, gold, mid]
    assert await names(None, 49) == [cheap]
    await client.post(REDEMPTIONS, json={"customer_id": customer, "reward_id": cheap}, headers=pos)
    assert await names(None, 90) == [mid], "the per-member limit is reached"


async def test_timeout_expires_reservations(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    pos: dict[str, str],
    settings: Settings,
    engine: AsyncEngine,
    database_url: str,
) -> None:
    customer = await member_with(client, pos, 100)
    reward_id = await new_reward(client, admin, stock=1)
    late = (
        await client.post(
            REDEMPTIONS, json={"customer_id": customer, "reward_id": reward_id}, headers=pos
        )
    ).json()
    fresh = (
        await client.post(REDEMPTIONS, json={"customer_id": customer, "points": 20}, headers=pos)
    ).json()
    reserved_until = datetime.fromisoformat(late["reserved_until"])
    created = datetime.fromisoformat(late["created_at"])
    assert reserved_until - created == rewards.RESERVATION_TIMEOUT
    sessions = async_sessionmaker(engine, class_=AsyncSession)
    assert await release_expired_reservations(sessions, settings) == 0, "nothing is due yet"
    await sql(
        engine,
        "UPDATE loyalty.redemptions SET reserved_until = :t WHERE id = :i",
        t=datetime.now(UTC) - timedelta(seconds=1),
        i=uuid.UUID(late["id"]),
    )
    confirm_late = await client.post(f"{REDEMPTIONS}/{late['id']}/confirm", headers=pos)
    assert confirm_late.status_code == 409
    assert confirm_late.json()["type"].endswith("/reservation-expired")
    assert await release_expired_reservations(sessions, settings) == 1
    assert await release_expired_reservations(sessions, settings) == 0, "expired once"
    expired = (await client.get(f"{REDEMPTIONS}/{late['id']}", headers=pos)).json()
    assert expired["status"] == "expired" and expired["settled_at"] is not None
    kept = (await client.get(f"{REDEMPTIONS}/{fresh['id']}", headers=pos)).json()
    assert kept["status"] == "reserved"
    assert await available(client, pos, customer) == 80
    assert (await client.get(f"{REWARDS}/{reward_id}", headers=pos)).json()["stock"] == 1
    await ledger_is_consistent(database_url)
