"""The GDPR export: everything referrals holds about a customer, merged duplicates included."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.referrals.models import (
    codes,
    customers,
    fingerprints,
    purchases,
    referrals,
    refunds,
    rewards,
)
from shared.events.contacts import CustomerErased
from shared.settings import Settings
from tests.services.referrals.delivery import NOW, buy, deliver, refer, seed_programme

Sessions = async_sessionmaker[AsyncSession]
T0 = datetime(2026, 11, 2, 4, 0, tzinfo=UTC)


async def insert(sessions: Sessions, table: Table, *rows: dict[str, Any]) -> None:
    async with sessions() as session, session.begin():
        for row in rows:
            await session.execute(table.insert().values(**row))


def customer_row(customer_id: uuid.UUID, **overrides: Any) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "status": "active",
        "email_key": f"{customer_id.hex[:8]}@example.com",
        "phone_key": None,
        "tier": None,
        "merged_into": None,
        "signed_up_at": T0,
        "updated_at": T0,
    } | overrides


def referral_row(referrer: uuid.UUID, referee: uuid.UUID, at: datetime) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "referrer_id": referrer,
        "referee_id": referee,
        "code": "ABCDEFGH",
        "source": "signup",
        "status": "pending",
        "flag_reasons": [],
        "programme_version": 1,
        "attributed_at": at,
        "created_at": at,
    }


async def test_export_gathers_every_table_and_merged_customers(
    client: httpx.AsyncClient, admin: dict[str, str], sessions: Sessions
) -> None:
    aisyah, duplicate, older_duplicate = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    friend, their_friend, referrer, stranger = (uuid.uuid4() for _ in range(4))
    await insert(
        sessions,
        customers,
        customer_row(aisyah, tier="gold", phone_key="60123456789"),
        customer_row(duplicate, status="merged", merged_into=aisyah, email_key=None),
        customer_row(older_duplicate, status="merged", merged_into=duplicate, email_key=None),
        customer_row(friend),
        customer_row(stranger),
    )
    await insert(
        sessions,
        codes,
        {"code": "AAAABBBB", "customer_id": aisyah, "created_at": T0, "replaced_at": T0},
        {"code": "CCCCDDDD", "customer_id": aisyah, "created_at": T0 + timedelta(days=1)},
        {"code": "EEEEFFFF", "customer_id": older_duplicate, "created_at": T0},
        {"code": "GGGGHHHH", "customer_id": stranger, "created_at": T0},
    )
    invited = referral_row(aisyah, friend, T0 + timedelta(days=2))
    invited |= {"status": "qualified", "qualified_at": T0 + timedelta(days=5)}
    invited_by_duplicate = referral_row(older_duplicate, their_friend, T0 + timedelta(days=3))
    invited_her = referral_row(referrer, aisyah, T0)
    unrelated = referral_row(stranger, uuid.uuid4(), T0)
    await insert(sessions, referrals, invited, invited_by_duplicate, invited_her, unrelated)
    reward = {
        "id": uuid.uuid4(),
        "referral_id": invited["id"],
        "customer_id": aisyah,
        "role": "referrer",
        "points": 500,
        "status": "rewarded",
        "rewarded_at": T0 + timedelta(days=5),
    }
    friends_reward = reward | {"id": uuid.uuid4(), "customer_id": friend, "role": "referee"}
    await insert(sessions, rewards, reward, friends_reward)
    await insert(
        sessions,
        fingerprints,
        {"customer_id": aisyah, "kind": "device", "value": "d-1", "seen_at": T0},
        {"customer_id": duplicate, "kind": "payment", "value": "card-9", "seen_at": T0},
        {"customer_id": stranger, "kind": "device", "value": "d-2", "seen_at": T0},
    )
    bought, other = uuid.uuid4(), uuid.uuid4()
    purchase = {
        "id": bought,
        "customer_id": duplicate,
        "currency": "MYR",
        "total_minor": 8_000,
        "refunded_minor": 1_000,
        "purchased_at": T0 + timedelta(hours=1),
    }
    await insert(
        sessions,
        purchases,
        purchase,
        purchase | {"id": other, "customer_id": stranger, "refunded_minor": 0},
    )
    await insert(
        sessions,
        refunds,
        {"id": uuid.uuid4(), "purchase_id": bought, "amount_minor": 1_000, "refunded_at": T0},
        {"id": uuid.uuid4(), "purchase_id": other, "amount_minor": 50, "refunded_at": T0},
    )

    response = await client.get(f"/v1/referrals/customers/{aisyah}/export", headers=admin)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["customer_id"] == str(aisyah)
    assert body["customer"]["tier"] == "gold"
    assert body["customer"]["phone_key"] == "60123456789"
    assert {c["customer_id"] for c in body["merged_customers"]} == {
        str(duplicate),
        str(older_duplicate),
    }
    assert {c["status"] for c in body["merged_customers"]} == {"merged"}
    assert [c["code"] for c in body["codes"]] == ["AAAABBBB", "EEEEFFFF", "CCCCDDDD"]
    assert [r["id"] for r in body["referrals_as_referrer"]] == [
        str(invited["id"]),
        str(invited_by_duplicate["id"]),
    ]
    assert body["referrals_as_referrer"][0]["status"] == "qualified"
    assert [r["id"] for r in body["referrals_as_referee"]] == [str(invited_her["id"])]
    assert [(r["id"], r["points"]) for r in body["rewards"]] == [(str(reward["id"]), 500)]
    assert {(f["kind"], f["value"]) for f in body["fingerprints"]} == {
        ("device", "d-1"),
        ("payment", "card-9"),
    }
    assert [p["id"] for p in body["purchases"]] == [str(bought)]
    assert [r["amount_minor"] for r in body["refunds"]] == [1_000]
    assert datetime.fromisoformat(body["exported_at"]) > T0


async def test_export_of_an_unknown_customer_is_empty(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await client.get(f"/v1/referrals/customers/{uuid.uuid4()}/export", headers=admin)
    assert response.status_code == 200
    body = response.json()
    assert body["customer"] is None
    for section in (
        "merged_customers",
        "codes",
        "referrals_as_referrer",
        "referrals_as_referee",
        "rewards",
        "fingerprints",
        "purchases",
        "refunds",
    ):
        assert body[section] == [], section


async def test_export_of_a_malformed_id_is_a_validation_problem(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await client.get("/v1/referrals/customers/not-a-uuid/export", headers=admin)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_export_needs_the_admin_scope(
    client: httpx.AsyncClient, pos: dict[str, str], reader: dict[str, str]
) -> None:
    url = f"/v1/referrals/customers/{uuid.uuid4()}/export"
    assert (await client.get(url, headers=pos)).status_code == 403
    assert (await client.get(url, headers=reader)).status_code == 403
    assert (await client.get(url)).status_code == 401


async def test_export_of_a_referred_friend_and_after_erasure(
    client: httpx.AsyncClient, admin: dict[str, str], sessions: Sessions, settings: Settings
) -> None:
    await seed_programme(sessions)
    referrer, friend = await refer(sessions, settings, at=NOW - timedelta(days=2))
    purchase = await buy(sessions, settings, friend, 6_000, NOW - timedelta(days=1))
    url = f"/v1/referrals/customers/{friend}/export"

    body = (await client.get(url, headers=admin)).json()
    assert body["customer"]["status"] == "active"
    assert len(body["codes"]) == 1
    assert [r["referrer_id"] for r in body["referrals_as_referee"]] == [str(referrer)]
    assert body["referrals_as_referee"][0]["status"] == "qualified"
    assert body["referrals_as_referrer"] == []
    assert [(r["role"], r["points"]) for r in body["rewards"]] == [("referee", 100)]
    assert [p["id"] for p in body["purchases"]] == [str(purchase.purchase_id)]

    await deliver(
        sessions, settings, CustomerErased(customer_id=friend, erased_at=datetime.now(UTC))
    )
    erased = (await client.get(url, headers=admin)).json()
    assert erased["customer"]["status"] == "erased"
    assert erased["customer"]["email_key"] is None
    assert erased["codes"] == erased["fingerprints"] == []
    assert len(erased["rewards"]) == 1  # the anonymous history stays
