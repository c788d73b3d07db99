"""GDPR requests through the HTTP API: export (with other services' parts) and erasure."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.contacts import SERVICE, gdpr
from services.contacts.models import ImportJob, ImportRowError
from shared.events.envelope import EventEnvelope
from shared.events.registry import EVENTS
from shared.http.app import create_app
from shared.pipeline.tables import platform_tables
from shared.settings import Settings
from tests.http.app import client_for
from tests.services.contacts.helpers import add_consent, events, sign_up
from tests.support.processes import free_port

T0 = datetime(2026, 3, 1, 8, 30, tzinfo=UTC)

ZULEYKA: dict[str, Any] = {
    "given_name": "Zuléyka",
    "family_name": "Quennell-Abara",
    "email": "Zuleyka.Q@Example.MY",
    "phone": "+60 12-777 3141",
    "card_number": "4539 1488 0343 6467",
    "birthday": {"month": 11, "day": 2, "year": 1991},
    "locale": "ms-MY",
    "time_zone": "Asia/Kuala_Lumpur",
    "social": {"instagram": "@zuleyka_qa", "line": "zq.line"},
    "tags": ["zq-regular"],
    "attributes": {"nickname": "Zuzu-Q", "visits": 12},
    "source": "pos",
    "referral_code": "RFQ7ZK",
}
ZULEYKA_STORED = {
    "email": "zuleyka.q@example.my",
    "phone": "+60127773141",
    "card_number": "4539148803436467",
}
# What the old profile merged into her holds.
ZQ_OLD: dict[str, Any] = {
    "given_name": "Zulaikha",
    "email": "zq.old-mail@example.my",
    "social": {"tiktok": "@zq_tok"},
    "attributes": {"old_loyalty_no": "OLD-99871"},
}
PROOF = "double opt-in from zuleyka.q@example.my, ip 203.0.113.77"
NEEDLES = [
    "Zuléyka",
    "Quennell",
    "zuleyka.q@example.my",
    "+60127773141",
    "60127773141",
    "4539148803436467",
    "@zuleyka_qa",
    "zq.line",
    "zq-regular",
    "Zuzu-Q",
    "RFQ7ZK",
    "203.0.113.77",
    "Zulaikha",
    "zq.old-mail@example.my",
    "@zq_tok",
    "OLD-99871",
]


async def find_in_schema(
    sessions: async_sessionmaker[AsyncSession], needles: list[str], schema: str = "contacts"
) -> list[tuple[str, str, str]]:
    """(table, column, needle) for every needle found in any column of any table of `schema`.

    The tables and columns come from information_schema at test time, so a table added
    later is searched too. Every column is read as text (bytea as UTF-8).
    """
    found: list[tuple[str, str, str]] = []
    async with sessions() as session:
        columns = await session.execute(
            text(
                "SELECT c.table_name, c.column_name, c.data_type "
                "FROM information_schema.columns c JOIN information_schema.tables t "
                "ON t.table_schema = c.table_schema AND t.table_name = c.table_name "
                "WHERE c.table_schema = :schema AND t.table_type = 'BASE TABLE' "
                "ORDER BY c.table_name, c.ordinal_position"
            ),
            {"schema": schema},
        )
        for table, column, data_type in columns.all():
            value = (
                f"convert_from(\"{column}\", 'UTF8')"
                if data_type == "bytea"
                else f'"{column}"::text'
            )
            for needle in needles:
                hits = await session.execute(
                    text(
                        f'SELECT count(*) FROM "{schema}"."{table}" '
                        f"WHERE strpos(lower({value}), lower(:needle)) > 0"
                    ),
                    {"needle": needle},
                )
                if hits.scalar_one():
                    found.append((table, column, needle))
    return found


# Erasure.


async def test_erasure_blanks_the_profile_and_keeps_an_anonymous_id(
    client: httpx.AsyncClient,
    pos: dict[str, str],
    admin: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    zq = await sign_up(client, pos, **ZULEYKA)
    await add_consent(client, admin, zq, "email", "granted", T0, PROOF)
    erased = await client.delete(f"/v1/contacts/{zq}", headers=admin)
    assert erased.status_code == 204, erased.text
    assert erased.content == b""

    record = (await client.get(f"/v1/contacts/{zq}", headers=admin)).json()
    assert record["status"] == "erased"
    assert record["id"] == zq
    blank: dict[str, Any] = {
        "given_name": None,
        "family_name": None,
        "email": None,
        "phone": None,
        "card_number": None,
        "birthday": None,
        "locale": None,
        "time_zone": None,
        "social": {},
        "tags": [],
        "attributes": {},
        "referral_code": None,
    }
    assert {field: record[field] for field in blank} == blank
    assert (record["signup_source"], record["signup_store"]) == ("pos", "kl-01")
    email = record["consents"]["email"]
    assert (email["status"], email["proof"]) == ("granted", None), (
        "the record stays, the proof goes"
    )

    for query in ("email=zuleyka.q@example.my", "phone=0127773141", "card=4539148803436467"):
        found = await client.get(f"/v1/contacts/lookup?{query}", headers=pos)
        assert found.status_code == 404, query
    again = await sign_up(client, pos, email=ZULEYKA["email"], phone=ZULEYKA["phone"])
    assert again != zq
    card = await client.get("/v1/contacts/lookup?card=4539148803436467", headers=pos)
    assert card.status_code == 404
    assert (await sign_up(client, pos, card_number=ZULEYKA["card_number"])) not in (zq, again)

    changed = await client.patch(f"/v1/contacts/{zq}", json={"given_name": "X"}, headers=admin)
    assert changed.status_code == 409
    assert changed.json()["type"].endswith("/contact-erased")

    assert (await client.delete(f"/v1/contacts/{zq}", headers=admin)).status_code == 204
    erasures = [(k, d) for t, k, d in await events(sessions) if t == "customer.erased"]
    assert len(erasures) == 1, "erasing twice publishes once"
    assert erasures[0][0] == zq
    assert set(erasures[0][1]) == {"customer_id", "erased_at"}


async def test_erasure_refusals(
    client: httpx.AsyncClient, pos: dict[str, str], admin: dict[str, str]
) -> None:
    a = await sign_up(client, pos, email="a@example.my")
    b = await sign_up(client, pos, email="b@example.my")
    unknown = uuid.uuid4()
    missing = await client.delete(f"/v1/contacts/{unknown}", headers=admin)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    merged = await client.post(f"/v1/contacts/{a}/merge", json={"duplicate_id": b}, headers=admin)
    assert merged.status_code == 200
    duplicate = await client.delete(f"/v1/contacts/{b}", headers=admin)
    assert duplicate.status_code == 409, "a merged id is erased through its survivor"
    assert duplicate.json()["merged_into"] == a
    assert (await client.delete("/v1/contacts/not-a-uuid", headers=admin)).status_code == 422
    assert (await client.delete(f"/v1/contacts/{a}", headers=pos)).status_code == 403
    assert (await client.delete(f"/v1/contacts/{a}")).status_code == 401
    assert (await client.get(f"/v1/contacts/{a}", headers=admin)).json()["status"] == "active"


async def test_erasure_leaves_no_personal_data_in_the_contacts_schema(
    client: httpx.AsyncClient,
    pos: dict[str, str],
    admin: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    # Every place the service writes her data: profile, merged profile, consents with
    # proof, events (published and not), stored Idempotency-Key responses, import errors.
    keyed = {**pos, "Idempotency-Key": "signup-zq"}
    signup = await client.post("/v1/contacts", json=ZULEYKA, headers=keyed)
    assert signup.status_code == 201
    zq = signup.json()["id"]
    old = await sign_up(client, pos, **ZQ_OLD)
    await add_consent(client, admin, zq, "email", "granted", T0, PROOF)
    await add_consent(client, admin, old, "sms", "granted", T0, "sms YES from +60127773141")
    await add_consent(client, admin, old, "sms", "revoked", T0 + timedelta(days=1), "STOP zq.line")
    merged = await client.post(
        f"/v1/contacts/{zq}/merge",
        json={"duplicate_id": old},
        headers={**admin, "Idempotency-Key": "merge-zq"},
    )
    assert merged.status_code == 200
    patched = await client.patch(
        f"/v1/contacts/{zq}", json={"tags": ["zq-regular", "x"]}, headers=admin
    )
    assert patched.status_code == 200
    bystander = await sign_up(client, pos, given_name="Bystander", email="by@example.my")
    job = uuid.uuid4()
    async with sessions() as session, session.begin():
        session.add(ImportJob(id=job, status="completed", filename="members.csv", created_at=T0))
        session.add_all(
            [
                ImportRowError(job_id=job, line=2, reason="duplicate email ZULEYKA.Q@example.my"),
                ImportRowError(job_id=job, line=3, reason="phone +60127773141 taken"),
                ImportRowError(job_id=job, line=4, reason="duplicate email by@example.my"),
            ]
        )
        # The relay sent the first events already; the rest wait in the outbox.
        outbox = platform_tables("contacts").outbox
        first_two = text("SELECT id FROM contacts.outbox ORDER BY id LIMIT 2")
        ids = list((await session.execute(first_two)).scalars())
        await session.execute(update(outbox).where(outbox.c.id.in_(ids)).values(published_at=T0))

    before = await find_in_schema(sessions, NEEDLES)
    tables = {table for table, _, _ in before}
    assert {"contacts", "consents", "consent_history", "outbox", "idempotency_keys"} <= tables
    assert "import_errors" in tables, "the search must see what erasure has to remove"

    assert (await client.delete(f"/v1/contacts/{zq}", headers=admin)).status_code == 204

    assert await find_in_schema(sessions, NEEDLES) == []
    async with sessions() as session:
        reasons = await session.execute(
            text("SELECT reason FROM contacts.import_errors ORDER BY line")
        )
        assert list(reasons.scalars()) == [
            "duplicate email [erased]",
            "phone [erased] taken",
            "duplicate email by@example.my",
        ]
        remaining = (
            await session.execute(
                text("SELECT key, payload, published_at FROM contacts.outbox ORDER BY id")
            )
        ).all()
    assert all(published is None for _, _, published in remaining), "sent rows of hers are gone"
    for _, payload, _ in remaining:  # the unsent rest still parse as their event types
        EVENTS.parse(EventEnvelope.model_validate_json(payload))
    kept = [json.loads(p)["type"] for k, p, _ in remaining if k == zq]
    assert kept[-1] == "customer.erased"
    assert "customer.merged" in kept
    by = (await client.get(f"/v1/contacts/{bystander}", headers=admin)).json()
    assert (by["given_name"], by["email"], by["status"]) == ("Bystander", "by@example.my", "active")
    by_events = [d for _, k, d in await events(sessions) if k == bystander]
    assert by_events[0]["profile"]["email"] == "by@example.my", "others' events are untouched"
    replay = await client.post("/v1/contacts", json=ZULEYKA, headers=keyed)
    assert replay.headers.get("idempotent-replayed") is None, "her stored response is gone"
    assert replay.status_code == 201


async def test_erasure_racing_a_merge_into_the_customer_scrubs_the_duplicate(
    client: httpx.AsyncClient,
    pos: dict[str, str],
    admin: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    for round_ in range(4):
        survivor = await sign_up(client, pos, email=f"s{round_}@example.my")
        email = f"dup{round_}.secret@example.my"
        duplicate = await sign_up(client, pos, email=email, given_name=f"Dupname{round_}")
        merged, erased = await asyncio.gather(
            client.post(
                f"/v1/contacts/{survivor}/merge", json={"duplicate_id": duplicate}, headers=admin
            ),
            client.delete(f"/v1/contacts/{survivor}", headers=admin),
        )
        assert erased.status_code == 204
        if merged.status_code == 200:  # merged first: the erasure covers the duplicate
            assert await find_in_schema(sessions, [email, f"Dupname{round_}"]) == []
        else:  # erased first: the merge into an erased customer is refused
            assert merged.status_code == 409, merged.text
            kept = (await client.get(f"/v1/contacts/{duplicate}", headers=admin)).json()
            assert kept["email"] == email


def test_scrubbed_payloads_stay_valid_events() -> None:
    from shared.events.contacts import (
        ConsentConfirmationRequested,
        CustomerSignedUp,
        ProfileSnapshot,
    )

    signed_up = CustomerSignedUp(
        customer_id=uuid.uuid4(),
        profile=ProfileSnapshot(given_name="Zuléyka", email="zq@example.my", tags=["a"]),
        source="web",
        referral_code="RFQ7ZK",
        signed_up_at=T0,
    )
    confirm = ConsentConfirmationRequested(
        customer_id=uuid.uuid4(),
        channel="email",
        address="zq@example.my",
        locale="ms-MY",
        confirmation_token="t0k",
        requested_at=T0,
    )
    for event in (signed_up, confirm):
        payload = event.to_envelope(source="contacts").model_dump_json()
        scrubbed = gdpr.scrub_payload(payload)
        parsed = EVENTS.parse(EventEnvelope.model_validate_json(scrubbed))
        assert type(parsed) is type(event)
        assert "zq@example.my" not in scrubbed and "Zuléyka" not in scrubbed
        assert "RFQ7ZK" not in scrubbed


def test_redaction_is_case_insensitive_and_literal() -> None:
    assert gdpr.redact("x A.B+c@Example.my y", ["a.b+c@example.my"]) == "x [erased] y"
    assert gdpr.redact("aXb", ["a.b"]) == "aXb"


# Export.


async def test_export_holds_everything_about_the_customer(
    client: httpx.AsyncClient,
    pos: dict[str, str],
    admin: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    zq = await sign_up(client, pos, **ZULEYKA)
    old = await sign_up(client, pos, **ZQ_OLD)
    await add_consent(client, admin, zq, "email", "granted", T0, PROOF)
    await add_consent(client, admin, old, "sms", "revoked", T0 + timedelta(days=1), "STOP")
    merge = await client.post(f"/v1/contacts/{zq}/merge", json={"duplicate_id": old}, headers=admin)
    assert merge.status_code == 200

    response = await client.get(f"/v1/contacts/{zq}/export", headers=admin)
    assert response.status_code == 200, response.text
    document = response.json()
    assert document["customer_id"] == zq
    profile = document["profile"]
    assert (profile["email"], profile["phone"]) == ("zuleyka.q@example.my", "+60127773141")
    assert profile["attributes"] == {
        "nickname": "Zuzu-Q",
        "visits": 12,
        "old_loyalty_no": "OLD-99871",
    }
    assert {c: v["status"] for c, v in profile["consents"].items()} == {
        "email": "granted",
        "sms": "revoked",
    }
    history = [(h["channel"], h["status"], h["proof"]) for h in document["consent_history"]]
    assert history == [("email", "granted", PROOF), ("sms", "revoked", "STOP")]
    assert document["signup"]["source"] == "pos"
    assert document["signup"]["store_id"] == "kl-01"
    assert document["signup"]["referral_code"] == "RFQ7ZK"
    assert [d["id"] for d in document["merged_duplicates"]] == [old]
    assert document["import_errors"]["included"] is False
    assert document["services"] == {}


async def test_export_of_an_erased_customer_is_the_anonymous_record(
    client: httpx.AsyncClient, pos: dict[str, str], admin: dict[str, str]
) -> None:
    zq = await sign_up(client, pos, **ZULEYKA)
    assert (await client.delete(f"/v1/contacts/{zq}", headers=admin)).status_code == 204
    document = (await client.get(f"/v1/contacts/{zq}/export", headers=admin)).json()
    assert document["profile"]["status"] == "erased"
    assert "zuleyka" not in json.dumps(document, ensure_ascii=False).lower()


async def test_export_refusals(
    client: httpx.AsyncClient, pos: dict[str, str], admin: dict[str, str]
) -> None:
    zq = await sign_up(client, pos, **ZULEYKA)
    assert (
        await client.get(f"/v1/contacts/{uuid.uuid4()}/export", headers=admin)
    ).status_code == 404
    assert (await client.get("/v1/contacts/nope/export", headers=admin)).status_code == 422
    assert (await client.get(f"/v1/contacts/{zq}/export", headers=pos)).status_code == 403
    assert (await client.get(f"/v1/contacts/{zq}/export")).status_code == 401


# Gathering the other services' parts, from a real HTTP server.


def other_services() -> FastAPI:
    """Stand-ins for loyalty (answers), referrals (fails), scoring (slow), messaging (not JSON)."""
    app = FastAPI()

    @app.get("/v1/loyalty/customers/{customer_id}/export")
    async def loyalty(customer_id: str, request: Request) -> dict[str, Any]:
        return {
            "customer_id": customer_id,
            "points": 120,
            "authorization": request.headers.get("authorization"),
        }

    @app.get("/v1/referrals/customers/{customer_id}/export")
    async def referrals(customer_id: str) -> JSONResponse:
        return JSONResponse({"detail": "database down"}, status_code=503)

    @app.get("/v1/scoring/customers/{customer_id}/export")
    async def scoring(customer_id: str) -> dict[str, Any]:
        await asyncio.sleep(3)
        return {"late": True}

    @app.get("/v1/messaging/customers/{customer_id}/export")
    async def messaging(customer_id: str) -> PlainTextResponse:
        return PlainTextResponse("<html>proxy error</html>")

    return app


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    """Serve `app` with uvicorn on a free loopback port; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        lifespan="off",
        log_level="warning",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    assert server.started, "the stand-in server did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def test_export_gathers_the_other_services_parts(
    settings: Settings,
    pos: dict[str, str],
    admin: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gdpr, "EXPORT_TIMEOUT_SECONDS", 0.5)
    async with serve(other_services()) as base:
        closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        configured = settings.model_copy(
            update={
                "contacts_export_services": {
                    "loyalty": base + "/",
                    "referrals": base,
                    "scoring": base,
                    "messaging": base,
                    "gift_cards": closed,
                    "contacts": base,  # itself: ignored, never a request loop
                }
            }
        )
        async with client_for(create_app(configured, [SERVICE])) as client:
            zq = await sign_up(client, pos, **ZULEYKA)
            response = await client.get(f"/v1/contacts/{zq}/export", headers=admin)
    assert response.status_code == 200, response.text
    services = response.json()["services"]
    assert sorted(services) == ["gift_cards", "loyalty", "messaging", "referrals", "scoring"]
    assert services["loyalty"] == {
        "customer_id": zq,
        "points": 120,
        "authorization": admin["Authorization"],
    }
    assert services["referrals"]["error"] == "referrals answered HTTP 503"
    assert services["referrals"]["status"] == 503
    assert services["scoring"]["error"] == "scoring did not answer within 0.5 s"
    assert "not JSON" in services["messaging"]["error"]
    assert services["gift_cards"]["error"].startswith("gift_cards is unreachable: ConnectError")
    assert services["gift_cards"]["url"] == f"{closed}/v1/gift_cards/customers/{zq}/export"
