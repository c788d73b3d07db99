"""Referral codes: format, uniqueness, lookups as typed, renewal with a grace period."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.referrals import codes, rules

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
GRACE = timedelta(days=90)
Sessions = async_sessionmaker[AsyncSession]


async def seed_customer(
    sessions: Sessions,
    customer_id: uuid.UUID | None = None,
    *,
    status: str = "active",
    email_key: str | None = None,
    phone_key: str | None = None,
    merged_into: uuid.UUID | None = None,
    signed_up_at: datetime | None = T0,
) -> uuid.UUID:
    """A row of the customers projection, as the signup handler would write it."""
    customer_id = customer_id or uuid.uuid4()
    async with sessions() as session, session.begin():
        await session.execute(
            text(
                "INSERT INTO referrals.customers (customer_id, status, email_key, phone_key,"
                " merged_into, signed_up_at, updated_at)"
                " VALUES (:id, :status, :email, :phone, :merged, :signed, now())"
            ),
            {
                "id": customer_id,
                "status": status,
                "email": email_key,
                "phone": phone_key,
                "merged": merged_into,
                "signed": signed_up_at,
            },
        )
    return customer_id


async def code_of(sessions: Sessions, customer_id: uuid.UUID, now: datetime = T0) -> str:
    async with sessions() as session, session.begin():
        return await codes.ensure_code(session, customer_id, now)


async def owner(
    sessions: Sessions, code_text: str, at: datetime, grace: timedelta = GRACE
) -> uuid.UUID | None:
    async with sessions() as session:
        return await codes.owner_of_code(session, code_text, at, grace)


async def test_a_code_is_eight_characters_of_the_alphabet_and_stable(
    sessions: Sessions,
) -> None:
    customer = await seed_customer(sessions)
    code = await code_of(sessions, customer)
    assert len(code) == rules.CODE_LENGTH
    assert set(code) <= set(rules.CODE_ALPHABET)
    assert await code_of(sessions, customer, T0 + timedelta(days=1)) == code


async def test_codes_are_unique_and_unrelated_to_the_customer(sessions: Sessions) -> None:
    customers = [await seed_customer(sessions) for _ in range(50)]
    made = [await code_of(sessions, customer) for customer in customers]
    assert len(set(made)) == len(made)
    for customer, code in zip(customers, made, strict=True):
        assert code.lower() not in customer.hex


async def test_a_collision_draws_again(sessions: Sessions, monkeypatch: pytest.MonkeyPatch) -> None:
    first = await seed_customer(sessions)
    taken = await code_of(sessions, first)
    draws: Iterator[str] = iter([taken, taken, "HJKM2345"])
    monkeypatch.setattr(rules, "new_code", lambda: next(draws))
    second = await seed_customer(sessions)
    assert await code_of(sessions, second) == "HJKM2345"
    assert await owner(sessions, taken, T0) == first


@pytest.mark.parametrize("typed", ["{code}", "{lower}", "{display}", " {dashed_lower} "])
async def test_lookup_ignores_case_spaces_and_dashes(sessions: Sessions, typed: str) -> None:
    customer = await seed_customer(sessions)
    code = await code_of(sessions, customer)
    text_typed = typed.format(
        code=code,
        lower=code.lower(),
        display=rules.display_code(code),
        dashed_lower=rules.display_code(code).lower(),
    )
    assert await owner(sessions, text_typed, T0) == customer


@pytest.mark.parametrize("typed", ["", "ABC", "ABCDEFGHJ", "ABCD-EFG0", "ABCDEFGI"])
async def test_malformed_and_unknown_codes_resolve_to_nobody(
    sessions: Sessions, typed: str
) -> None:
    await code_of(sessions, await seed_customer(sessions))
    assert await owner(sessions, typed, T0) is None
    assert await owner(sessions, "ZZZZ-ZZZZ", T0) is None


async def test_a_renewed_code_keeps_working_within_its_grace_only(sessions: Sessions) -> None:
    customer = await seed_customer(sessions)
    old = await code_of(sessions, customer)
    renewed_at = T0 + timedelta(days=10)
    async with sessions() as session, session.begin():
        new = await codes.renew_code(session, customer, renewed_at)
    assert new != old
    assert await code_of(sessions, customer) == new
    assert await owner(sessions, new, renewed_at + GRACE * 2) == customer
    assert await owner(sessions, old, renewed_at + GRACE) == customer
    assert await owner(sessions, old, renewed_at + GRACE + timedelta(seconds=1)) is None
    assert await owner(sessions, old, renewed_at, grace=timedelta(0)) == customer
    assert await owner(sessions, old, renewed_at + timedelta(microseconds=1), timedelta(0)) is None


async def test_merged_owner_resolves_to_the_survivor_erased_to_nobody(
    sessions: Sessions,
) -> None:
    survivor = await seed_customer(sessions)
    duplicate = await seed_customer(sessions, status="merged", merged_into=survivor)
    erased = await seed_customer(sessions, status="erased")
    unknown = uuid.uuid4()  # a code whose owner the projection never saw
    assert await owner(sessions, await code_of(sessions, duplicate), T0) == survivor
    assert await owner(sessions, await code_of(sessions, erased), T0) is None
    assert await owner(sessions, await code_of(sessions, unknown), T0) is None


async def test_get_code(
    client: httpx.AsyncClient, sessions: Sessions, reader: dict[str, str]
) -> None:
    customer = await seed_customer(sessions)
    code = await code_of(sessions, customer)
    response = await client.get(f"/v1/referrals/codes/{customer}", headers=reader)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["customer_id"] == str(customer)
    assert body["code"] == code
    assert body["display"] == f"{code[:4]}-{code[4:]}"
    assert body["share_link"] == f"https://example.com/join?ref={code}"
    assert datetime.fromisoformat(body["created_at"]) == T0
    assert body["previous"] == []


async def test_get_code_of_a_customer_without_one_is_404(
    client: httpx.AsyncClient, reader: dict[str, str]
) -> None:
    response = await client.get(f"/v1/referrals/codes/{uuid.uuid4()}", headers=reader)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    bad = await client.get("/v1/referrals/codes/not-an-id", headers=reader)
    assert bad.status_code == 422


async def test_renew_over_http(
    client: httpx.AsyncClient,
    sessions: Sessions,
    pos: dict[str, str],
    reader: dict[str, str],
) -> None:
    customer = await seed_customer(sessions)
    old = await code_of(sessions, customer)
    forbidden = await client.post(f"/v1/referrals/codes/{customer}/renew", headers=reader)
    assert forbidden.status_code == 403
    response = await client.post(f"/v1/referrals/codes/{customer}/renew", headers=pos)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["code"] != old
    [previous] = body["previous"]
    assert previous["code"] == old
    replaced_at = datetime.fromisoformat(previous["replaced_at"])
    assert datetime.fromisoformat(previous["valid_until"]) == replaced_at + GRACE
    assert await owner(sessions, old, replaced_at + GRACE) == customer
    assert await owner(sessions, body["code"], replaced_at) == customer

    again = await client.get(f"/v1/referrals/codes/{customer}", headers=reader)
    assert again.json()["code"] == body["code"]
    missing = await client.post(f"/v1/referrals/codes/{uuid.uuid4()}/renew", headers=pos)
    assert missing.status_code == 404
