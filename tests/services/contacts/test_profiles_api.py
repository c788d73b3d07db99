"""Signup, read, change, list and till lookup through the HTTP API."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from services.contacts.normalize import is_valid_card

AISYAH: dict[str, Any] = {
    "given_name": "Aisyah",
    "family_name": "Rahman",
    "email": " Aisyah@Example.MY ",
    "phone": "012-345 6789",
    "birthday": {"month": 2, "day": 29},
    "locale": "ms_my",
    "time_zone": "Asia/Kuala_Lumpur",
    "social": {"instagram": "@aisyah", "line": "aisyah.r"},
    "tags": ["VIP", " coffee "],
    "attributes": {"favourite_drink": "teh tarik", "visits_per_week": 3, "vegetarian": False},
    "source": "pos",
    "referral_code": "k7qx2m",
}


async def sign_up(
    client: httpx.AsyncClient, headers: dict[str, str], **fields: Any
) -> httpx.Response:
    return await client.post("/v1/contacts", json={**AISYAH, **fields}, headers=headers)


async def test_signup_normalises_and_generates_a_card(
    client: httpx.AsyncClient, pos: dict[str, str]
) -> None:
    response = await sign_up(client, pos)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["email"] == "aisyah@example.my"
    assert body["phone"] == "+60123456789"
    assert body["locale"] == "ms-MY"
    assert body["tags"] == ["coffee", "vip"]
    assert body["signup_store"] == "kl-01", "the store comes from the POS token"
    assert body["referral_code"] == "K7QX2M"
    assert body["birthday"] == {"month": 2, "day": 29, "year": None}
    assert is_valid_card(body["card_number"]) and body["card_number"].startswith("88")
    assert response.headers["location"] == f"/v1/contacts/{body['id']}"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("email", "not-an-email"),
        ("phone", "12"),
        ("phone", "+66 2 000"),
        ("card_number", "8800 0000 0001"),
        ("locale", "english please"),
        ("time_zone", "Mars/Olympus"),
        ("birthday", {"month": 2, "day": 30}),
        ("tags", ["has space"]),
    ],
)
async def test_bad_values_are_422_naming_the_field(
    client: httpx.AsyncClient, pos: dict[str, str], field: str, value: Any
) -> None:
    response = await sign_up(client, pos, **{field: value})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert any(field in error["field"] for error in response.json()["errors"])


async def test_unknown_field_is_refused(client: httpx.AsyncClient, pos: dict[str, str]) -> None:
    response = await sign_up(client, pos, favourite_colour="blue")
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body.favourite_colour"


async def test_wrong_check_digit_is_refused_and_right_one_kept(
    client: httpx.AsyncClient, pos: dict[str, str]
) -> None:
    assert (await sign_up(client, pos, card_number="4539 1488 0343 6467")).status_code == 201
    wrong = await sign_up(
        client, pos, email="b@example.my", phone=None, card_number="4539148803436468"
    )
    assert wrong.status_code == 422
    assert "check digit" in wrong.json()["errors"][0]["message"]


@pytest.mark.parametrize("field", ["email", "phone", "card_number"])
async def test_duplicate_identifier_is_409_with_the_existing_id(
    client: httpx.AsyncClient, pos: dict[str, str], field: str
) -> None:
    first = (await sign_up(client, pos, card_number="4539148803436467")).json()
    others = {"email": "other@example.my", "phone": "+60 12-999 8888", "card_number": None}
    others[field] = {
        "email": "AISYAH@example.my",
        "phone": "+60123456789",
        "card_number": "4539-1488-0343-6467",
    }[field]
    response = await sign_up(client, pos, **others)
    assert response.status_code == 409
    body = response.json()
    assert body["existing_id"] == first["id"]
    assert field in body["fields"]


async def test_concurrent_duplicate_signups_exactly_one_wins(
    client: httpx.AsyncClient, pos: dict[str, str], admin: dict[str, str]
) -> None:
    responses = await asyncio.gather(*[sign_up(client, pos) for _ in range(6)])
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201, 409, 409, 409, 409, 409]
    winner = next(r for r in responses if r.status_code == 201).json()["id"]
    assert all(r.json()["existing_id"] == winner for r in responses if r.status_code == 409)
    listing = await client.get("/v1/contacts", headers=admin)
    assert [c["id"] for c in listing.json()["items"]] == [winner]


async def test_get_patch_and_clear(
    client: httpx.AsyncClient, pos: dict[str, str], admin: dict[str, str]
) -> None:
    created = (await sign_up(client, pos)).json()
    url = f"/v1/contacts/{created['id']}"
    patched = await client.patch(
        url, json={"family_name": "Ismail", "birthday": None, "tags": ["gold"]}, headers=admin
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["family_name"] == "Ismail"
    assert body["birthday"] is None
    assert body["tags"] == ["gold"]
    assert body["email"] == "aisyah@example.my", "absent fields stay"
    fetched = await client.get(url, headers=admin)
    assert fetched.json() == body
    assert (await client.get(f"/v1/contacts/{uuid.uuid4()}", headers=admin)).status_code == 404


async def test_patch_to_someone_elses_email_is_409(
    client: httpx.AsyncClient, pos: dict[str, str], admin: dict[str, str]
) -> None:
    first = (await sign_up(client, pos)).json()
    second = (await sign_up(client, pos, email="b@example.my", phone="0129998888")).json()
    response = await client.patch(
        f"/v1/contacts/{second['id']}", json={"email": "aisyah@example.my"}, headers=admin
    )
    assert response.status_code == 409
    assert response.json()["existing_id"] == first["id"]
    unchanged = await client.get(f"/v1/contacts/{second['id']}", headers=admin)
    assert unchanged.json()["email"] == "b@example.my"


async def test_lookup_at_the_till(client: httpx.AsyncClient, pos: dict[str, str]) -> None:
    created = (await sign_up(client, pos)).json()
    for query in (
        {"phone": "0123456789"},
        {"email": "AISYAH@example.my"},
        {"card": created["card_number"]},
    ):
        found = await client.get("/v1/contacts/lookup", params=query, headers=pos)
        assert found.status_code == 200, (query, found.text)
        assert found.json()["id"] == created["id"]
    assert (
        await client.get("/v1/contacts/lookup", params={"phone": "0129990000"}, headers=pos)
    ).status_code == 404
    both = await client.get(
        "/v1/contacts/lookup", params={"phone": "0123456789", "email": "a@b.co"}, headers=pos
    )
    assert both.status_code == 422


async def test_list_filters_and_paginates(
    client: httpx.AsyncClient, pos: dict[str, str], reader: dict[str, str]
) -> None:
    ids = []
    for n in range(7):
        created = await sign_up(
            client,
            pos,
            email=f"c{n}@example.my",
            phone=f"01299900{n:02d}",
            tags=["even" if n % 2 == 0 else "odd"],
            given_name=f"Name{n}",
        )
        ids.append(created.json()["id"])
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/contacts", params=params, headers=reader)).json()
        seen += [c["id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    evens = (await client.get("/v1/contacts", params={"tag": "even"}, headers=reader)).json()
    assert len(evens["items"]) == 4
    text = (await client.get("/v1/contacts", params={"q": "name3"}, headers=reader)).json()
    assert [c["id"] for c in text["items"]] == [ids[3]]
    bad = await client.get("/v1/contacts", params={"cursor": "garbage"}, headers=reader)
    assert bad.status_code == 422


async def test_scopes(
    client: httpx.AsyncClient, pos: dict[str, str], reader: dict[str, str]
) -> None:
    assert (await sign_up(client, reader)).status_code == 403
    created = (await sign_up(client, pos)).json()
    assert (await client.get(f"/v1/contacts/{created['id']}", headers=reader)).status_code == 200
    patch = await client.patch(
        f"/v1/contacts/{created['id']}", json={"given_name": "X"}, headers=pos
    )
    assert patch.status_code == 403
