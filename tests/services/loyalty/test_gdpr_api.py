"""The GDPR export: everything loyalty holds about a customer, merged duplicates included."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx

from services.loyalty.handlers import handlers
from shared.db.engine import create_engine, session_factory
from shared.events.contacts import CustomerMerged, ProfileSnapshot
from shared.settings import Settings


async def test_export_gathers_purchases_refunds_ledger_and_merged_members(
    client: httpx.AsyncClient,
    pos: dict[str, str],
    admin: dict[str, str],
    settings: Settings,
) -> None:
    customer, duplicate = str(uuid.uuid4()), str(uuid.uuid4())
    line = {"sku": "LATTE", "category": "coffee", "quantity": 2, "unit_price_minor": 1_500}
    bought = await client.post(
        "/v1/loyalty/purchases",
        json={
            "customer": {"id": customer},
            "order_id": "G-1",
            "currency": "MYR",
            "total_minor": 3_000,
            "lines": [line],
        },
        headers=pos,
    )
    assert bought.status_code == 201, bought.text
    purchase_id = bought.json()["purchase_id"]
    refunded = await client.post(
        f"/v1/loyalty/purchases/{purchase_id}/refunds", json={"amount_minor": 1_000}, headers=pos
    )
    assert refunded.status_code == 201, refunded.text
    other = await client.post(
        "/v1/loyalty/purchases",
        json={
            "customer": {"id": duplicate},
            "order_id": "G-2",
            "currency": "MYR",
            "total_minor": 5_000,
        },
        headers=pos,
    )
    assert other.status_code == 201, other.text

    engine = create_engine(str(settings.database_url))
    try:
        event = CustomerMerged(
            survivor_id=uuid.UUID(customer),
            merged_id=uuid.UUID(duplicate),
            profile=ProfileSnapshot(),
            merged_at=datetime.now(UTC),
        )
        async with session_factory(engine)() as session, session.begin():
            await handlers(settings)[CustomerMerged](
                session, event, event.to_envelope(source="contacts")
            )
    finally:
        await engine.dispose()

    response = await client.get(f"/v1/loyalty/customers/{customer}/export", headers=admin)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["customer_id"] == customer
    assert body["member"]["balance"] == 30 - 10 + 50
    assert [m["customer_id"] for m in body["merged_members"]] == [duplicate]
    assert body["merged_members"][0]["status"] == "merged"
    assert {p["order_id"] for p in body["purchases"]} == {"G-1", "G-2"}
    first = next(p for p in body["purchases"] if p["order_id"] == "G-1")
    assert first["lines"][0]["sku"] == "LATTE"
    assert [r["amount_minor"] for r in body["refunds"]] == [1_000]
    kinds = sorted(entry["kind"] for entry in body["ledger"])
    assert kinds == ["earn", "earn", "merge_in", "merge_out", "refund_reversal"]
    assert sum(entry["points"] for entry in body["ledger"]) == body["member"]["balance"]
    assert {lot["customer_id"] for lot in body["lots"]} == {customer}
    for section in ("redemptions", "stamp_cards", "stamp_entries", "tier_changes"):
        assert body[section] == []


async def test_export_of_an_unknown_customer_is_empty(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await client.get(f"/v1/loyalty/customers/{uuid.uuid4()}/export", headers=admin)
    assert response.status_code == 200
    body = response.json()
    assert body["member"] is None
    assert body["purchases"] == body["ledger"] == body["merged_members"] == []


async def test_export_needs_the_admin_scope(client: httpx.AsyncClient, pos: dict[str, str]) -> None:
    url = f"/v1/loyalty/customers/{uuid.uuid4()}/export"
    assert (await client.get(url, headers=pos)).status_code == 403
    assert (await client.get(url)).status_code == 401
