"""Merging a duplicate into a survivor: the rules, the API, its events and its refusals."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.contacts.merging import ConsentState, merged_values, winning_consents
from services.contacts.models import Consent, ConsentRecord
from tests.services.contacts.helpers import add_consent, events, sign_up

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


async def merge(
    client: httpx.AsyncClient, headers: dict[str, str], survivor: str, duplicate: str
) -> httpx.Response:
    return await client.post(
        f"/v1/contacts/{survivor}/merge", json={"duplicate_id": duplicate}, headers=headers
    )


# The rules, on plain data.


def test_survivor_keeps_its_values_and_fills_its_gaps() -> None:
    survivor = {
        "given_name": "Aisyah",
        "family_name": None,
        "email": "a@example.my",
        "phone": None,
        "birthday_month": 3,
        "birthday_day": 14,
        "birthday_year": None,
        "tags": ["vip"],
        "social": {"line": "aisyah"},
        "attributes": {"drink": "teh", "size": "L"},
    }
    duplicate = {
        "given_name": "Aishah",
        "family_name": "Rahman",
        "email": "old@example.my",
        "phone": "+60123456789",
        "birthday_month": 3,
        "birthday_day": 14,
        "birthday_year": 1990,
        "tags": ["coffee", "vip"],
        "social": {"line": "other", "instagram": "@a"},
        "attributes": {"drink": "kopi", "pet": "cat"},
    }
    assert merged_values(survivor, duplicate) == {
        "family_name": "Rahman",
        "phone": "+60123456789",
        "birthday_year": 1990,
        "tags": ["coffee", "vip"],
        "social": {"line": "aisyah", "instagram": "@a"},
        "attributes": {"drink": "teh", "size": "L", "pet": "cat"},
    }


def test_a_birthday_is_taken_whole_and_never_mixed() -> None:
    whole = merged_values({}, {"birthday_month": 7, "birthday_day": 1, "birthday_year": None})
    assert whole == {"birthday_month": 7, "birthday_day": 1, "birthday_year": None}
    different_day = {"birthday_month": 7, "birthday_day": 2, "birthday_year": None}
    assert (
        merged_values(different_day, {**different_day, "birthday_day": 3, "birthday_year": 1980})
        == {}
    )


def test_nothing_to_take_means_no_change() -> None:
    same = {"given_name": "A", "tags": ["x"], "social": {}, "attributes": {}}
    assert merged_values(same, {"given_name": "B", "tags": ["x"]}) == {}


def test_the_consent_changed_last_wins_and_ties_keep_the_survivors() -> None:
    def state(status: str, minutes: int) -> ConsentState:
        return ConsentState(status, "web", None, T0 + timedelta(minutes=minutes))

    survivor = {
        "email": state("granted", 10),
        "sms": state("granted", 5),
        "push": state("revoked", 1),
    }
    duplicate = {
        "email": state("revoked", 20),
        "sms": state("revoked", 5),
        "line": state("granted", 0),
    }
    assert winning_consents(survivor, duplicate) == {
        "email": duplicate["email"],
        "line": duplicate["line"],
    }


# The API.


async def test_merge_folds_the_duplicate_into_the_survivor(
    client: httpx.AsyncClient,
    pos: dict[str, str],
    admin: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    survivor = await sign_up(
        client,
        pos,
        given_name="Siti",
        email="siti@example.my",
        tags=["vip"],
        attributes={"drink": "teh"},
        social={"line": "siti.n"},
    )
    duplicate = await sign_up(
        client,
        pos,
        given_name="Sity",
        family_name="Nurhaliza",
        email="siti.old@example.my",
        phone="012-555 0101",
        card_number="4539148803436467",
        birthday={"month": 5, "day": 9, "year": 1988},
        tags=["coffee"],
        attributes={"drink": "kopi", "pet": "cat"},
        social={"instagram": "@sity"},
    )
    # Signup generates a card; without one the survivor has a slot for the duplicate's.
    cleared = await client.patch(
        f"/v1/contacts/{survivor}", json={"card_number": None}, headers=admin
    )
    assert cleared.status_code == 200, cleared.text
    before = len(await events(sessions))
    response = await merge(client, admin, survivor, duplicate)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == survivor and body["status"] == "active"
    assert (body["given_name"], body["family_name"]) == ("Siti", "Nurhaliza")
    assert body["email"] == "siti@example.my", "the survivor keeps its own email"
    assert body["phone"] == "+60125550101" and body["card_number"] == "4539148803436467"
    assert body["birthday"] == {"month": 5, "day": 9, "year": 1988}
    assert body["tags"] == ["coffee", "vip"]
    assert body["attributes"] == {"drink": "teh", "pet": "cat"}
    assert body["social"] == {"line": "siti.n", "instagram": "@sity"}

    gone = (await client.get(f"/v1/contacts/{duplicate}", headers=admin)).json()
    assert gone["status"] == "merged" and gone["merged_into"] == survivor
    personal = ("given_name", "family_name", "email", "phone", "card_number", "birthday")
    assert all(gone[field] is None for field in personal)
    assert (gone["tags"], gone["social"], gone["attributes"]) == ([], {}, {})

    card = await client.get("/v1/contacts/lookup?card=4539148803436467", headers=pos)
    assert card.json()["id"] == survivor, "the till finds the survivor by the moved card"
    old_email = await client.get("/v1/contacts/lookup?email=siti.old@example.my", headers=pos)
    assert old_email.status_code == 404, "an identifier with no free slot is dropped"
    reused = await client.post("/v1/contacts", json={"email": "siti.old@example.my"}, headers=pos)
    assert reused.status_code == 201

    published = (await events(sessions))[before:]
    assert [(t, k) for t, k, _ in published[:2]] == [
        ("customer.merged", survivor),
        ("customer.updated", survivor),
    ]
    merged_event, updated_event = published[0][2], published[1][2]
    assert merged_event["merged_id"] == duplicate
    assert merged_event["profile"]["phone"] == "+60125550101"
    assert updated_event["changed"] == [
        "attributes",
        "birthday",
        "card_number",
        "family_name",
        "phone",
        "social",
        "tags",
    ]


async def test_no_update_event_when_the_survivor_gains_nothing(
    client: httpx.AsyncClient,
    pos: dict[str, str],
    admin: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    survivor = await sign_up(client, pos, given_name="Ravi", email="ravi@example.my")
    duplicate = await sign_up(client, pos, given_name="R", card_number="4111111111111111")
    # the survivor got a generated card at signup, so the duplicate's card has no slot
    assert (await merge(client, admin, survivor, duplicate)).status_code == 200
    types = [t for t, _, _ in await events(sessions)]
    assert types.count("customer.merged") == 1
    assert "customer.updated" not in types


async def test_consents_take_the_latest_change_and_keep_the_whole_history(
    client: httpx.AsyncClient,
    pos: dict[str, str],
    admin: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    survivor = await sign_up(client, pos, email="lim@example.my")
    duplicate = await sign_up(client, pos, phone="+60 12-444 0000")
    await add_consent(client, admin, survivor, "email", "granted", T0, "form A")
    await add_consent(client, admin, survivor, "sms", "granted", T0 + timedelta(days=3), "till")
    await add_consent(client, admin, duplicate, "email", "granted", T0 - timedelta(days=9), "old")
    await add_consent(client, admin, duplicate, "email", "revoked", T0 + timedelta(days=1), "unsub")
    await add_consent(client, admin, duplicate, "sms", "revoked", T0 + timedelta(days=2), "stop")
    await add_consent(client, admin, duplicate, "whatsapp", "granted", T0, "chat")

    before = len(await events(sessions))
    body = (await merge(client, admin, survivor, duplicate)).json()
    consents = {c: (v["status"], v["proof"]) for c, v in body["consents"].items()}
    assert consents == {
        "email": ("revoked", "unsub"),
        "sms": ("granted", "till"),
        "whatsapp": ("granted", "chat"),
    }
    async with sessions() as session:
        history = (await session.execute(select(ConsentRecord.contact_id))).scalars().all()
        left = (
            await session.execute(select(Consent).where(Consent.contact_id == uuid.UUID(duplicate)))
        ).all()
    assert [str(h) for h in history] == [survivor] * 6
    assert left == []
    page = (await client.get(f"/v1/contacts/{survivor}/consents/history", headers=admin)).json()
    assert len(page["items"]) == 6, "the consents API shows the whole history on the survivor"
    changed = [
        (k, d["channel"], d["status"])
        for t, k, d in (await events(sessions))[before:]
        if t == "consent.changed"
    ]
    assert changed == [(survivor, "email", "revoked"), (survivor, "whatsapp", "granted")]


async def test_refusals(
    client: httpx.AsyncClient, pos: dict[str, str], admin: dict[str, str]
) -> None:
    a = await sign_up(client, pos, email="a@example.my")
    b = await sign_up(client, pos, email="b@example.my")
    c = await sign_up(client, pos, email="c@example.my")
    unknown = str(uuid.uuid4())

    itself = await merge(client, admin, a, a)
    assert itself.status_code == 409
    assert itself.json()["type"].endswith("/merge-into-itself")
    for survivor, duplicate in ((unknown, a), (a, unknown)):
        missing = await merge(client, admin, survivor, duplicate)
        assert missing.status_code == 404
        assert missing.json()["detail"] == f"No customer {unknown}."

    assert (await merge(client, admin, a, b)).status_code == 200
    for survivor, duplicate in ((c, b), (b, c)):
        refused = await merge(client, admin, survivor, duplicate)
        assert refused.status_code == 409
        assert refused.json()["type"].endswith("/contact-merged")
        assert refused.json()["merged_into"] == a

    assert (await client.delete(f"/v1/contacts/{c}", headers=admin)).status_code == 204
    for survivor, duplicate in ((a, c), (c, a)):
        erased = await merge(client, admin, survivor, duplicate)
        assert erased.status_code == 409
        assert erased.json()["type"].endswith("/contact-erased")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/contacts/{a}/merge", {}),
        ("/v1/contacts/{a}/merge", {"duplicate_id": "not-a-uuid"}),
        ("/v1/contacts/{a}/merge", {"duplicate_id": "{b}", "force": True}),
        ("/v1/contacts/not-a-uuid/merge", {"duplicate_id": "{b}"}),
    ],
)
async def test_bad_requests_are_422(
    client: httpx.AsyncClient,
    pos: dict[str, str],
    admin: dict[str, str],
    path: str,
    body: dict[str, Any],
) -> None:
    a = await sign_up(client, pos, email="a@example.my")
    b = await sign_up(client, pos, email="b@example.my")
    filled = {k: v.format(b=b) if isinstance(v, str) else v for k, v in body.items()}
    response = await client.post(path.format(a=a), json=filled, headers=admin)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"


async def test_merging_needs_the_admin_scope(
    client: httpx.AsyncClient, pos: dict[str, str], reader: dict[str, str]
) -> None:
    a = await sign_up(client, pos, email="a@example.my")
    b = await sign_up(client, pos, email="b@example.my")
    assert (await merge(client, pos, a, b)).status_code == 403
    assert (await merge(client, reader, a, b)).status_code == 403
    assert (await merge(client, {}, a, b)).status_code == 401


async def test_a_repeated_merge_is_harmless(
    client: httpx.AsyncClient,
    pos: dict[str, str],
    admin: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    a = await sign_up(client, pos, email="a@example.my")
    b = await sign_up(client, pos, phone="+60 12-333 2222")
    keyed = {**admin, "Idempotency-Key": "merge-a-b"}
    first = await merge(client, keyed, a, b)
    replayed = await merge(client, keyed, a, b)
    assert replayed.headers.get("idempotent-replayed") == "true"
    assert replayed.json() == first.json()
    retried = await merge(client, admin, a, b)  # no key: the merge is recognised as done
    assert retried.status_code == 200
    assert retried.json()["phone"] == "+60123332222"
    assert [t for t, _, _ in await events(sessions)].count("customer.merged") == 1


async def test_merged_into_a_duplicate_points_at_the_final_survivor(
    client: httpx.AsyncClient, pos: dict[str, str], admin: dict[str, str]
) -> None:
    a = await sign_up(client, pos, email="a@example.my")
    b = await sign_up(client, pos, email="b@example.my")
    c = await sign_up(client, pos, email="c@example.my")
    assert (await merge(client, admin, b, a)).status_code == 200
    assert (await merge(client, admin, c, b)).status_code == 200
    first = (await client.get(f"/v1/contacts/{a}", headers=admin)).json()
    assert first["merged_into"] == c


async def test_opposite_concurrent_merges_do_not_deadlock(
    client: httpx.AsyncClient, pos: dict[str, str], admin: dict[str, str]
) -> None:
    for round_ in range(5):
        a = await sign_up(client, pos, email=f"a{round_}@example.my")
        b = await sign_up(client, pos, email=f"b{round_}@example.my")
        results = await asyncio.gather(merge(client, admin, a, b), merge(client, admin, b, a))
        assert sorted(r.status_code for r in results) == [200, 409], [r.text for r in results]
