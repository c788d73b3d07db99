"""Template CRUD and preview through the HTTP API."""

from __future__ import annotations

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.services.messaging.send_factories import make_recipient

BASE = "/v1/messaging/templates"


async def test_create_replace_list_delete(
    client: httpx.AsyncClient, admin: dict[str, str], reader: dict[str, str]
) -> None:
    body = {"subject": "Hai {{ name }}", "body": "Mata anda: {{ points }}"}
    created = await client.put(f"{BASE}/welcome/email/ms-MY", json=body, headers=admin)
    assert created.status_code == 201, created.text
    assert created.json()["locale"] == "ms-MY"
    replaced = await client.put(
        f"{BASE}/welcome/email/ms-MY", json={**body, "body": "Baru"}, headers=admin
    )
    assert replaced.status_code == 200 and replaced.json()["body"] == "Baru"
    assert (
        await client.put(f"{BASE}/welcome/email/default", json=body, headers=admin)
    ).status_code == 201

    listed = await client.get(f"{BASE}/welcome", headers=reader)
    assert [t["locale"] for t in listed.json()] == ["default", "ms-MY"]
    assert (await client.get(BASE, headers=reader)).status_code == 200

    assert (
        await client.put(f"{BASE}/welcome/email/en", json=body, headers=reader)
    ).status_code == 403
    assert (await client.delete(f"{BASE}/welcome/email/ms-MY", headers=admin)).status_code == 204
    assert (await client.delete(f"{BASE}/welcome/email/ms-MY", headers=admin)).status_code == 404
    assert (await client.get(f"{BASE}/nothing", headers=reader)).status_code == 404


async def test_invalid_templates_are_422_naming_the_place_and_change_nothing(
    client: httpx.AsyncClient, admin: dict[str, str], reader: dict[str, str]
) -> None:
    unknown = await client.put(
        f"{BASE}/promo/email/en",
        json={"subject": "Hi", "body": "Hello {{ name }}\nCode: {{ coupon }}"},
        headers=admin,
    )
    assert unknown.status_code == 422
    assert unknown.headers["content-type"].startswith("application/problem+json")
    [error] = unknown.json()["errors"]
    assert (error["field"], error["line"]) == ("body", 2)
    assert "coupon" in error["message"]

    syntax = await client.put(
        f"{BASE}/promo/sms/en", json={"body": "{% if name %}unclosed"}, headers=admin
    )
    assert syntax.status_code == 422
    assert syntax.json()["errors"][0]["field"] == "body"

    bad_channel = await client.put(f"{BASE}/promo/fax/en", json={"body": "x"}, headers=admin)
    assert bad_channel.status_code == 422
    assert (await client.get(f"{BASE}/promo", headers=reader)).status_code == 404


async def test_preview_renders_for_a_real_customer(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    cid = await make_recipient(sessions, locale="th-TH", given_name="Somchai", points_balance=4200)
    for locale, text in (
        ("default", "Hi {{ name }}"),
        ("th-TH", "สวัสดี {{ name }} {{ points }} {{ discount }}"),
    ):
        await client.put(
            f"{BASE}/promo/email/{locale}", json={"subject": "S", "body": text}, headers=admin
        )
    shown = await client.post(
        f"{BASE}/promo/preview",
        json={"customer_id": str(cid), "offer": {"amount_minor": 10000}},
        headers=admin,
    )
    assert shown.status_code == 200, shown.text
    assert shown.json()["locale"] == "th-TH"
    assert shown.json()["body"] == "สวัสดี Somchai 4,200 ฿100.00"

    english = await client.post(
        f"{BASE}/promo/preview", json={"customer_id": str(cid), "locale": "en"}, headers=admin
    )
    assert english.json() == {"locale": "default", "subject": "S", "body": "Hi Somchai"}

    missing = await client.post(
        f"{BASE}/promo/preview",
        json={"customer_id": "00000000-0000-0000-0000-000000000000"},
        headers=admin,
    )
    assert missing.status_code == 404
    no_sms = await client.post(
        f"{BASE}/promo/preview", json={"customer_id": str(cid), "channel": "sms"}, headers=admin
    )
    assert no_sms.status_code == 404
