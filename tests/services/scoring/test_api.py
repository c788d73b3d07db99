"""The scoring HTTP API: customer scores at read time, the model, fits and the export."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scoring.handlers import handlers
from shared.events.contacts import CustomerMerged, ProfileSnapshot
from shared.events.envelope import Event
from shared.events.purchases import PurchaseCompleted, PurchaseRefunded
from shared.settings import Settings
from tests.services.scoring.test_refit import seed_shop


async def deliver(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, event: Event
) -> None:
    async with sessions() as session, session.begin():
        await handlers(settings)[type(event)](session, event, event.to_envelope(source="test"))


def bought(customer: uuid.UUID, days_ago: int, total_minor: int = 3_000) -> PurchaseCompleted:
    return PurchaseCompleted(
        purchase_id=uuid.uuid4(),
        customer_id=customer,
        order_id=uuid.uuid4().hex,
        currency="MYR",
        total_minor=total_minor,
        purchased_at=datetime.now(UTC) - timedelta(days=days_ago),
    )


async def test_fit_on_demand_then_read_a_customer_and_the_model(
    client: httpx.AsyncClient,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    admin: dict[str, str],
    reader: dict[str, str],
) -> None:
    empty = await client.get("/v1/scoring/model", headers=reader)
    assert empty.status_code == 200, empty.text
    assert empty.json()["bgnbd"] is None
    too_early = await client.post("/v1/scoring/fits", headers=admin)
    assert too_early.status_code == 409, too_early.text
    assert too_early.json()["type"].endswith("/not-enough-data")

    await seed_shop(sessions, 200)
    customer = uuid.uuid4()
    for days_ago in (60, 30, 2):
        await deliver(sessions, settings, bought(customer, days_ago))

    assert (await client.post("/v1/scoring/fits", headers=reader)).status_code == 403
    fitted = await client.post("/v1/scoring/fits", headers=admin)
    assert fitted.status_code == 201, fitted.text
    body = fitted.json()
    assert body["rescored"] == 201
    assert [fit["model"] for fit in body["fits"]] == ["bgnbd", "gamma_gamma", "rfm"]

    model = (await client.get("/v1/scoring/model", headers=reader)).json()
    assert model["bgnbd"]["id"] == body["fits"][0]["id"]
    assert model["bgnbd"]["time_unit"] == "weeks"
    assert "holdout" in model["bgnbd"]["diagnostics"]
    assert model["churn_bands"] == settings.scoring_churn_bands

    view = await client.get(f"/v1/scoring/customers/{customer}", headers=reader)
    assert view.status_code == 200, view.text
    seen = view.json()
    assert seen["state"]["orders"] == 3
    assert seen["state"]["average_order_minor"] == 3_000
    assert seen["inputs"]["frequency"] == 2
    assert seen["inputs"]["recency"] == 58 / 7
    assert 0 <= seen["scores"]["churn_risk"] <= 1
    assert seen["scores"]["churn_band"] in settings.scoring_churn_bands
    assert seen["scores"]["clv"] > 0
    assert seen["scores"]["rfm"]["segment"]
    assert seen["scores"]["fit_id"] == body["fits"][0]["id"]


async def test_customer_errors(client: httpx.AsyncClient, reader: dict[str, str]) -> None:
    missing = await client.get(f"/v1/scoring/customers/{uuid.uuid4()}", headers=reader)
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert (await client.get("/v1/scoring/customers/not-a-uuid", headers=reader)).status_code == 422
    assert (await client.get(f"/v1/scoring/customers/{uuid.uuid4()}")).status_code == 401


async def test_fit_history_pages_newest_first(
    client: httpx.AsyncClient,
    sessions: async_sessionmaker[AsyncSession],
    admin: dict[str, str],
    reader: dict[str, str],
) -> None:
    await seed_shop(sessions, 100)
    for _ in range(2):
        assert (await client.post("/v1/scoring/fits", headers=admin)).status_code == 201
    first = (await client.get("/v1/scoring/fits?limit=4", headers=reader)).json()
    assert [fit["model"] for fit in first["items"]] == ["rfm", "gamma_gamma", "bgnbd", "rfm"]
    rest = (
        await client.get(f"/v1/scoring/fits?limit=4&cursor={first['next_cursor']}", headers=reader)
    ).json()
    assert [fit["model"] for fit in rest["items"]] == ["gamma_gamma", "bgnbd"]
    assert rest["next_cursor"] is None
    only = (await client.get("/v1/scoring/fits?model=bgnbd", headers=reader)).json()
    assert [fit["trigger"] for fit in only["items"]] == ["on-demand", "on-demand"]
    bad = await client.get("/v1/scoring/fits?cursor=abc", headers=reader)
    assert bad.status_code == 422
    assert (await client.get("/v1/scoring/fits?model=pareto", headers=reader)).status_code == 422


async def test_export_gathers_state_purchases_refunds_and_merged_customers(
    client: httpx.AsyncClient,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    admin: dict[str, str],
    reader: dict[str, str],
) -> None:
    customer, duplicate = uuid.uuid4(), uuid.uuid4()
    purchase = bought(customer, 5)
    await deliver(sessions, settings, purchase)
    await deliver(
        sessions,
        settings,
        PurchaseRefunded(
            refund_id=uuid.uuid4(),
            purchase_id=purchase.purchase_id,
            customer_id=customer,
            currency="MYR",
            amount_minor=500,
            refunded_at=datetime.now(UTC),
        ),
    )
    await deliver(sessions, settings, bought(duplicate, 9, total_minor=1_000))
    await deliver(
        sessions,
        settings,
        CustomerMerged(
            survivor_id=customer,
            merged_id=duplicate,
            profile=ProfileSnapshot(),
            merged_at=datetime.now(UTC),
        ),
    )
    url = f"/v1/scoring/customers/{customer}/export"
    assert (await client.get(url, headers=reader)).status_code == 403
    response = await client.get(url, headers=admin)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["customer"]["spend_minor"] == 2_500 + 1_000
    assert [m["customer_id"] for m in body["merged_customers"]] == [str(duplicate)]
    assert len(body["purchases"]) == 2
    assert [r["amount_minor"] for r in body["refunds"]] == [500]
    assert body["segments"] == []
