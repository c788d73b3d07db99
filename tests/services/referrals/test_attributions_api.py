"""Attribution: first valid attribution wins, repeats are harmless, the late window, and
each abuse guard (self-referral, bought before, circular, velocity)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.referrals import attribution
from shared.settings import Settings
from tests.services.referrals.test_codes_api import code_of, seed_customer
from tests.services.referrals.test_programmes_api import new_programme

ATTRIBUTIONS = "/v1/referrals/attributions"
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
Sessions = async_sessionmaker[AsyncSession]


async def attribute(
    sessions: Sessions,
    settings: Settings,
    referee: uuid.UUID,
    code: str,
    *,
    at: datetime = T0,
    source: str = "signup",
    fingerprints: tuple[tuple[str, str], ...] = (),
) -> attribution.Attributed:
    async with sessions() as session, session.begin():
        return await attribution.attribute(
            session,
            referee_id=referee,
            code_text=code,
            source=source,  # type: ignore[arg-type]
            at=at,
            settings=settings,
            fingerprints=fingerprints,
        )


async def refused(
    sessions: Sessions, settings: Settings, referee: uuid.UUID, code: str, **kwargs: Any
) -> str:
    with pytest.raises(attribution.AttributionRefused) as caught:
        await attribute(sessions, settings, referee, code, **kwargs)
    return caught.value.reason


async def referrer_with_code(sessions: Sessions, **fields: Any) -> tuple[uuid.UUID, str]:
    customer = await seed_customer(sessions, **fields)
    return customer, await code_of(sessions, customer)


async def count_referrals(sessions: Sessions) -> int:
    async with sessions() as session:
        return int(
            (await session.execute(text("SELECT count(*) FROM referrals.referrals"))).scalar_one()
        )


async def test_attribution_at_the_till(
    client: httpx.AsyncClient,
    sessions: Sessions,
    pos: dict[str, str],
    admin: dict[str, str],
) -> None:
    programme = await new_programme(client, admin)
    referrer, code = await referrer_with_code(sessions)
    referee = await seed_customer(sessions, signed_up_at=datetime.now(UTC) - timedelta(days=1))
    body = {"referee_id": str(referee), "code": code.lower()}
    response = await client.post(ATTRIBUTIONS, json=body, headers=pos)
    assert response.status_code == 201, response.text
    made = response.json()
    assert made["referrer_id"] == str(referrer)
    assert made["referee_id"] == str(referee)
    assert made["status"] == "pending"
    assert made["flag_reasons"] == []
    assert made["source"] == "late"
    assert made["code"] == code
    assert made["programme_version"] == programme["version"]
    assert response.headers["location"] == f"/v1/referrals/{made['id']}"

    again = await client.post(ATTRIBUTIONS, json=body, headers=pos)
    assert again.status_code == 200
    assert again.json() == made

    _, other_code = await referrer_with_code(sessions)
    other = await client.post(
        ATTRIBUTIONS, json={"referee_id": str(referee), "code": other_code}, headers=pos
    )
    assert other.status_code == 409
    assert other.json()["reason"] == "already_referred"
    assert await count_referrals(sessions) == 1


async def test_a_code_given_at_the_first_purchase_qualifies_at_once(
    client: httpx.AsyncClient,
    sessions: Sessions,
    pos: dict[str, str],
    admin: dict[str, str],
) -> None:
    """The till records the sale, then the friend remembers the code: no second purchase
    is needed for the referral to be decided."""
    await new_programme(client, admin)
    _, code = await referrer_with_code(sessions)
    signed_up_at = datetime.now(UTC) - timedelta(hours=2)
    referee = await seed_customer(sessions, signed_up_at=signed_up_at)
    async with sessions() as session, session.begin():
        await session.execute(
            text(
                "INSERT INTO referrals.purchases (id, customer_id, currency, total_minor,"
                " purchased_at) VALUES (:id, :customer, 'MYR', 90000, :at)"
            ),
            {"id": uuid.uuid4(), "customer": referee, "at": signed_up_at + timedelta(hours=1)},
        )
    body = {"referee_id": str(referee), "code": code}
    response = await client.post(ATTRIBUTIONS, json=body, headers=pos)
    assert response.status_code == 201, response.text
    async with sessions() as session:
        status = (
            await session.execute(
                text("SELECT status FROM referrals.referrals WHERE referee_id = :id"),
                {"id": referee},
            )
        ).scalar_one()
    assert status == "qualified"


@pytest.mark.parametrize(
    ("code", "reason"), [("NOT-A-CODE", "malformed_code"), ("ZZZZ-ZZZZ", "unknown_code")]
)
async def test_bad_codes_are_422(
    client: httpx.AsyncClient, sessions: Sessions, pos: dict[str, str], code: str, reason: str
) -> None:
    referee = await seed_customer(sessions, signed_up_at=datetime.now(UTC))
    response = await client.post(
        ATTRIBUTIONS, json={"referee_id": str(referee), "code": code}, headers=pos
    )
    assert response.status_code == 422
    problem = response.json()
    assert problem["reason"] == reason
    assert problem["errors"][0]["field"] == "body.code"
    assert problem["detail"]
    assert await count_referrals(sessions) == 0


async def test_unknown_referee_is_404_and_window_passed_is_422(
    client: httpx.AsyncClient, sessions: Sessions, pos: dict[str, str]
) -> None:
    _, code = await referrer_with_code(sessions)
    unknown = await client.post(
        ATTRIBUTIONS, json={"referee_id": str(uuid.uuid4()), "code": code}, headers=pos
    )
    assert unknown.status_code == 404
    old = await seed_customer(sessions, signed_up_at=datetime.now(UTC) - timedelta(days=15))
    late = await client.post(
        ATTRIBUTIONS,
        json={"referee_id": str(old), "code": code, "device_fingerprint": "dev-1"},
        headers=pos,
    )
    assert late.status_code == 422
    assert late.json()["reason"] == "window_passed"
    assert "14 days" in late.json()["detail"]
    assert await count_referrals(sessions) == 0
    async with sessions() as session:
        stored = await session.execute(text("SELECT count(*) FROM referrals.fingerprints"))
        assert stored.scalar_one() == 0  # a refused request changes nothing


async def test_late_window_boundaries(sessions: Sessions, settings: Settings) -> None:
    _, code = await referrer_with_code(sessions)
    window = timedelta(days=settings.referrals_late_attribution_days)
    on_time = await seed_customer(sessions, signed_up_at=T0)
    made = await attribute(sessions, settings, on_time, code, at=T0 + window, source="late")
    assert made.created and made.status == "pending"
    too_late = await seed_customer(sessions, signed_up_at=T0)
    at = T0 + window + timedelta(seconds=1)
    assert await refused(sessions, settings, too_late, code, at=at, source="late") == (
        "window_passed"
    )
    # At signup the window does not apply: the code came with the signup itself.
    made = await attribute(sessions, settings, too_late, code, at=at, source="signup")
    assert made.created


async def test_merged_referrer_resolves_to_survivor_erased_does_not(
    sessions: Sessions, settings: Settings
) -> None:
    survivor = await seed_customer(sessions)
    duplicate = await seed_customer(sessions, status="merged", merged_into=survivor)
    referee = await seed_customer(sessions)
    made = await attribute(sessions, settings, referee, await code_of(sessions, duplicate))
    async with sessions() as session:
        row = await attribution.referral(session, made.referral_id)
    assert row is not None and row.referrer_id == survivor
    erased = await seed_customer(sessions, status="erased")
    code = await code_of(sessions, erased)
    assert await refused(sessions, settings, await seed_customer(sessions), code) == (
        "unknown_code"
    )


async def test_the_first_of_two_concurrent_attributions_wins(
    sessions: Sessions, settings: Settings
) -> None:
    referee = await seed_customer(sessions)
    codes = [(await referrer_with_code(sessions))[1] for _ in range(2)]
    outcomes = await asyncio.gather(
        *(attribute(sessions, settings, referee, code) for code in codes),
        return_exceptions=True,
    )
    made = [o for o in outcomes if isinstance(o, attribution.Attributed)]
    lost = [o for o in outcomes if isinstance(o, attribution.AttributionRefused)]
    assert len(made) == 1 and made[0].created
    assert [o.reason for o in lost] == ["already_referred"]
    repeat = await attribute(sessions, settings, referee, codes[outcomes.index(made[0])])
    assert repeat == attribution.Attributed(made[0].referral_id, "pending", [], created=False)


@pytest.mark.parametrize(
    ("referrer_fields", "referee_fields"),
    [
        ({"email_key": "ana@gmail.com"}, {"email_key": "ana@gmail.com"}),
        ({"phone_key": "60123456789"}, {"phone_key": "60123456789"}),
    ],
)
async def test_same_email_or_phone_is_self_referral(
    sessions: Sessions,
    settings: Settings,
    referrer_fields: dict[str, Any],
    referee_fields: dict[str, Any],
) -> None:
    _, code = await referrer_with_code(sessions, **referrer_fields)
    made = await attribute(
        sessions, settings, await seed_customer(sessions, **referee_fields), code
    )
    assert (made.status, made.flag_reasons) == ("flagged", ["self_referral"])
    clean = await attribute(sessions, settings, await seed_customer(sessions), code)
    assert (clean.status, clean.flag_reasons) == ("pending", [])


async def test_own_code_is_self_referral(sessions: Sessions, settings: Settings) -> None:
    customer, code = await referrer_with_code(sessions)
    made = await attribute(sessions, settings, customer, code)
    assert (made.status, made.flag_reasons) == ("flagged", ["self_referral"])


async def test_shared_fingerprint_is_self_referral(
    client: httpx.AsyncClient, sessions: Sessions, pos: dict[str, str]
) -> None:
    referrer, code = await referrer_with_code(sessions)
    stored = await client.post(
        f"/v1/referrals/customers/{referrer}/fingerprints",
        json={"kind": "device", "value": "dev-42"},
        headers=pos,
    )
    assert stored.status_code == 201, stored.text
    referee = await seed_customer(sessions, signed_up_at=datetime.now(UTC))
    response = await client.post(
        ATTRIBUTIONS,
        json={"referee_id": str(referee), "code": code, "device_fingerprint": "dev-42"},
        headers=pos,
    )
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "flagged"
    assert response.json()["flag_reasons"] == ["self_referral"]

    # The same value as another kind of fingerprint is a different fingerprint.
    other = await seed_customer(sessions, signed_up_at=datetime.now(UTC))
    response = await client.post(
        ATTRIBUTIONS,
        json={"referee_id": str(other), "code": code, "payment_fingerprint": "dev-42"},
        headers=pos,
    )
    assert response.json()["flag_reasons"] == []


async def test_fingerprint_endpoint(
    client: httpx.AsyncClient, sessions: Sessions, pos: dict[str, str], reader: dict[str, str]
) -> None:
    customer = await seed_customer(sessions)
    url = f"/v1/referrals/customers/{customer}/fingerprints"
    body = {"kind": "payment", "value": "card-hash-1"}
    assert (await client.post(url, json=body, headers=reader)).status_code == 403
    first = await client.post(url, json=body, headers=pos)
    assert first.status_code == 201
    assert first.json() == {
        "customer_id": str(customer),
        "kind": "payment",
        "value": "card-hash-1",
        "created": True,
    }
    again = await client.post(url, json=body, headers=pos)
    assert again.status_code == 200 and again.json()["created"] is False
    bad = await client.post(url, json={"kind": "iris", "value": "x"}, headers=pos)
    assert bad.status_code == 422
    empty = await client.post(url, json={"kind": "device", "value": " "}, headers=pos)
    assert empty.status_code == 422
    unknown = await client.post(
        f"/v1/referrals/customers/{uuid.uuid4()}/fingerprints", json=body, headers=pos
    )
    assert unknown.status_code == 404


async def test_purchase_before_signup_is_bought_before(
    sessions: Sessions, settings: Settings
) -> None:
    _, code = await referrer_with_code(sessions)
    imported = await seed_customer(sessions, signed_up_at=T0)
    fresh = await seed_customer(sessions, signed_up_at=T0)
    async with sessions() as session, session.begin():
        for customer, when in [
            (imported, T0 - timedelta(days=200)),
            (fresh, T0),  # bought at the signup itself: that is the new business
        ]:
            await session.execute(
                text(
                    "INSERT INTO referrals.purchases (id, customer_id, currency, total_minor,"
                    " purchased_at) VALUES (:id, :customer, 'MYR', 9000, :at)"
                ),
                {"id": uuid.uuid4(), "customer": customer, "at": when},
            )
    made = await attribute(sessions, settings, imported, code)
    assert (made.status, made.flag_reasons) == ("flagged", ["bought_before"])
    clean = await attribute(sessions, settings, fresh, code)
    assert clean.flag_reasons == []


async def test_referring_your_own_referrer_is_circular(
    sessions: Sessions, settings: Settings
) -> None:
    a, code_a = await referrer_with_code(sessions)
    b, code_b = await referrer_with_code(sessions)
    c, code_c = await referrer_with_code(sessions)
    assert (await attribute(sessions, settings, b, code_a)).flag_reasons == []  # A→B
    assert (await attribute(sessions, settings, c, code_b)).flag_reasons == []  # B→C
    made = await attribute(sessions, settings, a, code_c)  # C→A closes the loop A→B→C→A
    assert (made.status, made.flag_reasons) == ("flagged", ["circular"])


async def test_a_burst_of_referrals_is_velocity(sessions: Sessions, settings: Settings) -> None:
    limited = settings.model_copy(
        update={"referrals_velocity_limit": 2, "referrals_velocity_window_hours": 24}
    )
    _, code = await referrer_with_code(sessions)
    window = timedelta(hours=24)

    async def refer(at: datetime) -> list[str]:
        return (
            await attribute(sessions, limited, await seed_customer(sessions), code, at=at)
        ).flag_reasons

    assert await refer(T0 - window) == []
    assert await refer(T0 - window + timedelta(seconds=1)) == []  # 2 in its window: the limit
    assert await refer(T0) == []  # the one at T0-window is exactly one window back: not counted
    assert await refer(T0) == ["velocity"]  # 3 within 24 hours
    assert await refer(T0 + window) == []  # those at T0 are exactly one window back now
