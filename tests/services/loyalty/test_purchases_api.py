"""Purchases at the till, refunds, the member view, adjustments and earning rules."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from shared.db.engine import create_engine


async def purchase(
    client: httpx.AsyncClient, headers: dict[str, str], customer: dict[str, Any], **extra: Any
) -> httpx.Response:
    body = {"customer": customer, "order_id": "A-1", "currency": "MYR", "total_minor": 2550}
    return await client.post("/v1/loyalty/purchases", json=body | extra, headers=headers)


async def ledger_is_consistent(database_url: str) -> None:
    """The cached balance equals the ledger sum and the lots' remaining less debt."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            rows = (
                await connection.execute(
                    text(
                        "SELECT m.balance, m.debt,"
                        " (SELECT coalesce(sum(points), 0) FROM loyalty.ledger l"
                        "  WHERE l.customer_id = m.customer_id),"
                        " (SELECT coalesce(sum(remaining), 0) FROM loyalty.lots o"
                        "  WHERE o.customer_id = m.customer_id)"
                        " FROM loyalty.members m"
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    for balance, debt, ledger_sum, remaining in rows:
        assert balance == ledger_sum
        assert balance == remaining - debt


async def test_purchase_earns_points_once_per_order(
    client: httpx.AsyncClient, pos: dict[str, str], database_url: str
) -> None:
    member = {"id": str(uuid.uuid4())}
    first = await purchase(client, pos, member)
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["points"] == 25  # RM25.50 at the default 1 point per RM1, floored
    assert (body["balance"], body["available"], body["pending"]) == (25, 25, 0)
    again = await purchase(client, pos, member)
    assert again.status_code == 200
    assert again.json()["repeated"] is True
    assert again.json()["balance"] == 25
    await ledger_is_consistent(database_url)


async def test_refunds_take_back_the_share_and_spent_points_become_debt(
    client: httpx.AsyncClient, pos: dict[str, str], admin: dict[str, str], database_url: str
) -> None:
    customer = str(uuid.uuid4())
    bought = (await purchase(client, pos, {"id": customer}, total_minor=10_000)).json()
    assert bought["points"] == 100
    spent = await client.post(
        f"/v1/loyalty/members/{customer}/adjustments",
        json={"points": -80, "reason": "manual redemption at the counter"},
        headers=admin,
    )
    assert spent.status_code == 201, spent.text
    url = f"/v1/loyalty/purchases/{bought['purchase_id']}/refunds"
    refund_id = str(uuid.uuid4())
    half = await client.post(url, json={"amount_minor": 5_000, "refund_id": refund_id}, headers=pos)
    assert half.status_code == 201, half.text
    assert half.json()["points_reversed"] == 50
    retried = await client.post(
        url, json={"amount_minor": 5_000, "refund_id": refund_id}, headers=pos
    )
    assert retried.json()["points_reversed"] == 50, "the same refund is applied once"
    member = (await client.get(f"/v1/loyalty/members/{customer}", headers=pos)).json()
    assert member["balance"] == -30
    assert member["debt"] == 30
    assert member["available"] == -30
    too_much = await client.post(url, json={"amount_minor": 6_000}, headers=pos)
    assert too_much.status_code == 409
    later = (
        await purchase(client, pos, {"id": customer}, order_id="A-2", total_minor=5_000)
    ).json()
    assert later["balance"] == 20, "later earnings repay the debt first"
    member = (await client.get(f"/v1/loyalty/members/{customer}", headers=pos)).json()
    assert (member["debt"], member["available"]) == (0, 20)
    await ledger_is_consistent(database_url)


async def test_adjustments_need_a_reason_and_cannot_overdraw(
    client: httpx.AsyncClient, pos: dict[str, str], admin: dict[str, str]
) -> None:
    customer = str(uuid.uuid4())
    await purchase(client, pos, {"id": customer})
    url = f"/v1/loyalty/members/{customer}/adjustments"
    assert (await client.post(url, json={"points": 5}, headers=admin)).status_code == 422
    assert (
        await client.post(url, json={"points": 0, "reason": "nothing"}, headers=admin)
    ).status_code == 422
    overdraw = await client.post(url, json={"points": -26, "reason": "too much"}, headers=admin)
    assert overdraw.status_code == 409
    assert overdraw.json()["available"] == 25
    assert (
        await client.post(url, json={"points": 5, "reason": "goodwill"}, headers=pos)
    ).status_code == 403
    ledger = (await client.get(f"/v1/loyalty/members/{customer}/ledger", headers=admin)).json()
    assert [entry["kind"] for entry in ledger] == ["earn"], "refused changes leave no entry"


async def test_rules_are_versioned_and_validated(
    client: httpx.AsyncClient, pos: dict[str, str], admin: dict[str, str]
) -> None:
    bad = await client.post(
        "/v1/loyalty/rules", json={"rules": {"base_rates": {"XXX": 1}}}, headers=admin
    )
    assert bad.status_code == 422
    assert any("base_rates" in e["field"] for e in bad.json()["errors"])
    saved = await client.post(
        "/v1/loyalty/rules",
        json={"rules": {"base_rates": {"MYR": 2}, "category_multipliers": {"coffee": 3}}},
        headers=admin,
    )
    assert saved.status_code == 201, saved.text
    assert saved.json()["version"] == 1
    lines = [{"sku": "LATTE", "category": "coffee", "quantity": 1, "unit_price_minor": 1000}]
    bought = await purchase(client, pos, {"id": str(uuid.uuid4())}, total_minor=1000, lines=lines)
    assert bought.json()["points"] == 60
    old = await purchase(
        client,
        pos,
        {"id": str(uuid.uuid4())},
        order_id="OLD",
        total_minor=1000,
        purchased_at="2020-01-01T10:00:00+08:00",
    )
    assert old.json()["points"] == 10, "the rules in force at the purchase time apply"


async def test_customer_is_resolved_from_the_contacts_projection(
    client: httpx.AsyncClient, pos: dict[str, str]
) -> None:
    unknown = await purchase(client, pos, {"phone": "012-345 6789"})
    assert unknown.status_code == 404
    both = await purchase(client, pos, {"phone": "0123456789", "email": "a@b.my"})
    assert both.status_code == 422


@pytest.mark.parametrize(
    "change",
    [{"currency": "myr"}, {"total_minor": -1}, {"order_id": ""}, {"surprise": 1}],
)
async def test_bad_purchases_are_refused(
    client: httpx.AsyncClient, pos: dict[str, str], change: dict[str, Any]
) -> None:
    response = await purchase(client, pos, {"id": str(uuid.uuid4())}, **change)
    assert response.status_code == 422
