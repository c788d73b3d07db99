"""Stamp cards: definitions, stamping with overflow, vouchers, refunds taking stamps back."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.loyalty import stamps
from services.loyalty.models import purchases
from shared.events.purchases import PurchaseCompleted, PurchaseLine


async def define(client: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> str:
    card = {
        "name": "Coffee card",
        "categories": ["coffee"],
        "stamps_required": 3,
        "reward_description": "One free coffee",
    } | body
    response = await client.post("/v1/loyalty/stamp-cards", json=card, headers=headers)
    assert response.status_code == 201, response.text
    definition_id: str = response.json()["id"]
    return definition_id


def coffee(quantity: int, sku: str = "LATTE", category: str | None = "coffee") -> dict[str, Any]:
    return {"sku": sku, "category": category, "quantity": quantity, "unit_price_minor": 500}


async def buy(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    customer: uuid.UUID,
    lines: list[dict[str, Any]],
) -> str:
    total = sum(line["quantity"] * line["unit_price_minor"] for line in lines)
    response = await client.post(
        "/v1/loyalty/purchases",
        json={
            "customer": {"id": str(customer)},
            "order_id": uuid.uuid4().hex,
            "currency": "MYR",
            "total_minor": total,
            "lines": lines,
        },
        headers=headers,
    )
    assert response.status_code == 201, response.text
    purchase_id: str = response.json()["purchase_id"]
    return purchase_id


async def stamp_stored(
    sessions: async_sessionmaker[AsyncSession], purchase_id: str, now: datetime
) -> list[str]:
    """The vouchers the purchase's stamps completed (recording the purchase stamps it).

    Stamping the stored purchase again must change nothing: that is checked here too.
    """
    async with sessions() as session, session.begin():
        row = (
            await session.execute(select(purchases).where(purchases.c.id == uuid.UUID(purchase_id)))
        ).one()
        again = await stamps.stamp_lines(session, row.id, row.customer_id, row.lines, now)
        assert again == [], "stamping is idempotent"
        codes = await session.execute(
            text(
                "SELECT DISTINCT c.voucher_code FROM loyalty.stamp_entries e "
                "JOIN loyalty.stamp_cards c ON c.id = e.card_id "
                "WHERE e.purchase_id = :p AND e.refund_id IS NULL "
                "AND c.voucher_code IS NOT NULL"
            ),
            {"p": row.id},
        )
        return sorted(code for (code,) in codes)


async def refund(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
    purchase_id: str,
    amount: int,
) -> tuple[uuid.UUID, int]:
    refund_id = uuid.uuid4()
    response = await client.post(
        f"/v1/loyalty/purchases/{purchase_id}/refunds",
        json={"amount_minor": amount, "refund_id": str(refund_id)},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    async with sessions() as session, session.begin():
        again = await stamps.unstamp_refund(
            session, uuid.UUID(purchase_id), refund_id, amount, datetime.now(UTC)
        )
        assert again == 0, "the refund endpoint already took the stamps back, once"
        taken = (
            await session.execute(
                text(
                    "SELECT coalesce(-sum(stamps), 0) FROM loyalty.stamp_entries "
                    "WHERE refund_id = :r"
                ),
                {"r": refund_id},
            )
        ).scalar_one()
    return refund_id, int(taken)


async def cards(client: httpx.AsyncClient, headers: dict[str, str], customer: uuid.UUID) -> Any:
    response = await client.get(f"/v1/loyalty/members/{customer}/stamp-cards", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def events_of(
    sessions: async_sessionmaker[AsyncSession], kind: str, customer: uuid.UUID
) -> list[dict[str, Any]]:
    async with sessions() as session:
        rows = await session.execute(
            text(
                "SELECT payload FROM loyalty.outbox WHERE event_type = :t AND key = :k ORDER BY id"
            ),
            {"t": kind, "k": str(customer)},
        )
        return [json.loads(payload)["data"] for (payload,) in rows]


async def test_definitions_are_validated_and_listed(
    client: httpx.AsyncClient, admin: dict[str, str], pos: dict[str, str]
) -> None:
    url = "/v1/loyalty/stamp-cards"
    body = {"name": "Nothing", "stamps_required": 3, "reward_description": "A thing"}
    assert (await client.post(url, json=body, headers=admin)).status_code == 422
    zero = body | {"skus": ["X"], "stamps_required": 0}
    bad = await client.post(url, json=zero, headers=admin)
    assert bad.status_code == 422
    assert any("stamps_required" in e["field"] for e in bad.json()["errors"])
    assert (await client.post(url, json=body | {"skus": ["X"]}, headers=pos)).status_code == 403
    await define(client, admin)
    await define(client, admin, name="Bagels", skus=["BAGEL"], categories=[], active=False)
    listed = (await client.get(url, headers=pos)).json()
    assert [(d["name"], d["skus"], d["categories"], d["active"]) for d in listed] == [
        ("Coffee card", [], ["coffee"], True),
        ("Bagels", ["BAGEL"], [], False),
    ]


async def test_stamps_overflow_onto_a_new_card_and_completion_issues_a_voucher(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    pos: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    definition = await define(client, admin)
    await define(client, admin, name="Muffins", skus=["MUFFIN"], categories=[], stamps_required=2)
    await define(client, admin, name="Old", categories=["coffee"], active=False)
    customer = uuid.uuid4()
    now = datetime.now(UTC)
    first = await buy(client, pos, customer, [coffee(2), coffee(1, "MUFFIN", "bakery")])
    assert await stamp_stored(sessions, first, now) == []
    second = await buy(client, pos, customer, [coffee(4, "FLAT-WHITE"), coffee(1, "TEA", "tea")])
    codes = await stamp_stored(sessions, second, now)
    assert len(codes) == 2, "2 + 4 stamps on a card of 3: two cards completed, none left over"
    assert await stamp_stored(sessions, second, now) == sorted(codes), "stamping is idempotent"
    third = await buy(client, pos, customer, [coffee(1)])
    assert await stamp_stored(sessions, third, now) == []
    held = await cards(client, pos, customer)
    coffee_cards = [c for c in held if c["definition_id"] == definition]
    assert [(c["stamps"], c["voucher_code"] is not None) for c in coffee_cards] == [
        (1, False),
        (3, True),
        (3, True),
    ]
    assert {c["voucher_code"] for c in coffee_cards[1:]} == set(codes)
    assert [(c["name"], c["stamps"]) for c in held if c["definition_id"] != definition] == [
        ("Muffins", 1)
    ]
    completed = await events_of(sessions, "stamp_card.completed", customer)
    issued = await events_of(sessions, "reward.issued", customer)
    assert sorted(e["voucher_code"] for e in completed) == sorted(codes)
    assert sorted(e["voucher_code"] for e in issued) == sorted(codes)
    assert issued[0]["description"] == "One free coffee"
    valid_until = datetime.fromisoformat(issued[0]["valid_until"])
    assert valid_until - datetime.fromisoformat(issued[0]["issued_at"]) == timedelta(days=30)


async def test_stamp_purchase_takes_the_event(
    client: httpx.AsyncClient, admin: dict[str, str], sessions: async_sessionmaker[AsyncSession]
) -> None:
    await define(client, admin, skus=["LATTE"], categories=[], stamps_required=5)
    event = PurchaseCompleted(
        purchase_id=uuid.uuid4(),
        customer_id=uuid.uuid4(),
        store_id="kl-01",
        order_id="E-1",
        currency="MYR",
        total_minor=1500,
        lines=[PurchaseLine(sku="LATTE", category=None, quantity=3, unit_price_minor=500)],
        channel="pos",
        purchased_at=datetime.now(UTC),
    )
    async with sessions() as session, session.begin():
        assert await stamps.stamp_purchase(session, event, datetime.now(UTC)) == []
        [card] = await stamps.cards_of(session, event.customer_id)
    assert (card["stamps"], card["stamps_required"]) == (3, 5)


async def test_refunds_take_stamps_back_proportionally_once(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    pos: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await define(client, admin, stamps_required=10)
    customer = uuid.uuid4()
    bought = await buy(client, pos, customer, [coffee(3)])  # 1500 minor, 3 stamps
    await stamp_stored(sessions, bought, datetime.now(UTC))
    refund_id, taken = await refund(client, pos, sessions, bought, 600)
    assert taken == 1, "40% of 3 stamps, rounded down"
    async with sessions() as session, session.begin():
        again = await stamps.unstamp_refund(
            session, uuid.UUID(bought), refund_id, 600, datetime.now(UTC)
        )
    assert again == 0, "the same refund takes nothing twice"
    assert (await cards(client, pos, customer))[0]["stamps"] == 2
    _, taken = await refund(client, pos, sessions, bought, 900)
    assert taken == 2, "the full refund takes back all the purchase's stamps"
    assert (await cards(client, pos, customer))[0]["stamps"] == 0


async def test_stamps_in_a_completed_card_are_not_taken_back(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    pos: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await define(client, admin, stamps_required=3)
    customer = uuid.uuid4()
    bought = await buy(client, pos, customer, [coffee(4)])
    [code] = await stamp_stored(sessions, bought, datetime.now(UTC))
    _, taken = await refund(client, pos, sessions, bought, 2000)
    assert taken == 1, "only the open card's stamp comes back; never below zero"
    held = await cards(client, pos, customer)
    assert [(c["stamps"], c["voucher_code"]) for c in held] == [(0, None), (3, code)]
