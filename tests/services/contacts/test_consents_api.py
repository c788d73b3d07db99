"""Consent statements, history, double opt-in and one-click unsubscribe through the HTTP API."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from services.contacts import consent_tokens
from services.contacts.consents import ConsentChange, decide
from shared.auth import Scope, issue_token
from shared.events.contacts import ConsentStatus
from shared.settings import Settings
from tests.support.auth import SECRET

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


async def sign_up(client: httpx.AsyncClient, pos: dict[str, str], **fields: Any) -> str:
    body = {"given_name": "Aisyah", "email": "aisyah@example.my", "phone": "012-345 6789"}
    response = await client.post("/v1/contacts", json={**body, **fields}, headers=pos)
    assert response.status_code == 201, response.text
    contact_id: str = response.json()["id"]
    return contact_id


async def put(
    client: httpx.AsyncClient, headers: dict[str, str], contact_id: str, channel: str, **body: Any
) -> httpx.Response:
    return await client.put(
        f"/v1/contacts/{contact_id}/consents/{channel}", json=body, headers=headers
    )


async def sql(database_url: str, statement: str, **params: Any) -> list[Any]:
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as connection:
            result = await connection.execute(text(statement), params)
            return list(result.all()) if result.returns_rows else []
    finally:
        await engine.dispose()


async def consent_events(database_url: str) -> list[tuple[str, dict[str, Any]]]:
    """The consent events in the outbox, in order, as (type, data)."""
    rows = await sql(
        database_url,
        "SELECT event_type, payload FROM contacts.outbox "
        "WHERE event_type LIKE 'consent.%' ORDER BY id",
    )
    return [(row.event_type, json.loads(row.payload)["data"]) for row in rows]


async def history(
    client: httpx.AsyncClient, headers: dict[str, str], contact_id: str, **params: Any
) -> list[dict[str, Any]]:
    response = await client.get(
        f"/v1/contacts/{contact_id}/consents/history", params=params, headers=headers
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def current(
    client: httpx.AsyncClient, headers: dict[str, str], contact_id: str
) -> dict[str, dict[str, Any]]:
    response = await client.get(f"/v1/contacts/{contact_id}/consents", headers=headers)
    assert response.status_code == 200, response.text
    return {item["channel"]: item for item in response.json()["items"]}


def change(
    status: ConsentStatus = "granted", at: datetime = NOW, double_opt_in: bool = False
) -> ConsentChange:
    return ConsentChange("email", status, "api", None, at, double_opt_in)


@pytest.mark.parametrize(
    ("current", "current_at", "new", "outcome", "stored", "event", "confirm"),
    [
        (None, None, change(), "changed", "granted", True, False),
        ("granted", NOW - timedelta(days=1), change(), "unchanged", "granted", False, False),
        ("granted", NOW + timedelta(days=1), change("revoked"), "stale", "revoked", False, False),
        ("granted", NOW, change("revoked"), "changed", "revoked", True, False),
        (None, None, change(double_opt_in=True), "changed", "pending", True, True),
        ("pending", NOW, change(double_opt_in=True), "unchanged", "pending", False, True),
        ("granted", NOW, change(double_opt_in=True), "already_granted", "granted", False, False),
    ],
)
def test_decide_rules(
    current: Any, current_at: Any, new: Any, outcome: str, stored: str, event: bool, confirm: bool
) -> None:
    decision = decide(current, current_at, new)
    assert (decision.outcome, decision.status) == (outcome, stored)
    assert (decision.publish_change, decision.request_confirmation) == (event, confirm)
    assert decision.write_current == (outcome in ("changed", "unchanged"))


async def test_grant_and_revoke_keep_history_and_publish_each_change_once(
    client: httpx.AsyncClient,
    pos: dict[str, str],
    admin: dict[str, str],
    reader: dict[str, str],
    database_url: str,
) -> None:
    contact = await sign_up(client, pos)
    granted = await put(client, pos, contact, "email", status="granted", proof="slip 0042")
    assert granted.status_code == 200, granted.text
    body = granted.json()
    assert body["outcome"] == "changed"
    assert body["consent"]["status"] == "granted"
    assert body["consent"]["source"] == "pos", "a POS token records `pos` by default"
    assert body["record"]["proof"] == "slip 0042"
    again = await put(client, pos, contact, "email", status="granted", proof="slip 0043")
    assert again.json()["outcome"] == "unchanged"
    revoked = await put(client, admin, contact, "email", status="revoked")
    assert revoked.json()["outcome"] == "changed"
    assert revoked.json()["consent"]["source"] == "api", "an admin token records `api` by default"
    await put(client, admin, contact, "sms", status="granted", source="web")

    events = await consent_events(database_url)
    assert [(kind, data["channel"], data["status"]) for kind, data in events] == [
        ("consent.changed", "email", "granted"),
        ("consent.changed", "email", "revoked"),
        ("consent.changed", "sms", "granted"),
    ], "no event for the unchanged statement"
    assert all(data["customer_id"] == contact for _, data in events)
    assert (await current(client, reader, contact))["email"]["status"] == "revoked"
    email = await history(client, reader, contact, channel="email")
    assert [(h["status"], h["proof"]) for h in email] == [
        ("revoked", None),
        ("granted", "slip 0043"),
        ("granted", "slip 0042"),
    ]
    profile = await client.get(f"/v1/contacts/{contact}", headers=reader)
    assert profile.json()["consents"]["sms"]["source"] == "web"


async def test_stale_statement_is_kept_but_does_not_override(
    client: httpx.AsyncClient, pos: dict[str, str], admin: dict[str, str], database_url: str
) -> None:
    contact = await sign_up(client, pos)
    now = datetime.now(UTC)
    await put(client, admin, contact, "sms", status="revoked", changed_at=now.isoformat())
    late = await put(
        client,
        pos,
        contact,
        "sms",
        status="granted",
        changed_at=(now - timedelta(hours=2)).isoformat(),
        proof="offline till",
    )
    assert late.status_code == 200, late.text
    body = late.json()
    assert body["outcome"] == "stale"
    assert "older than the current one" in body["detail"]
    assert body["consent"]["status"] == "revoked"
    assert body["record"]["status"] == "granted"
    assert (await current(client, admin, contact))["sms"]["status"] == "revoked"
    assert [h["proof"] for h in await history(client, admin, contact)] == [None, "offline till"]
    assert [d["status"] for _, d in await consent_events(database_url)] == ["revoked"]


async def test_slightly_future_time_is_taken_as_now(
    client: httpx.AsyncClient, pos: dict[str, str]
) -> None:
    contact = await sign_up(client, pos)
    ahead = datetime.now(UTC) + timedelta(minutes=2)
    response = await put(
        client, pos, contact, "email", status="granted", changed_at=ahead.isoformat()
    )
    assert response.status_code == 200, response.text
    assert datetime.fromisoformat(response.json()["consent"]["changed_at"]) <= ahead


@pytest.mark.parametrize(
    ("channel", "body", "status", "field"),
    [
        ("fax", {"status": "granted"}, 422, "path.channel"),
        ("email", {"status": "maybe"}, 422, "body.status"),
        ("email", {"status": "granted", "source": "carrier-pigeon"}, 422, "body.source"),
        (
            "email",
            {"status": "granted", "changed_at": "2999-01-01T00:00:00Z"},
            422,
            "body.changed_at",
        ),
        (
            "email",
            {"status": "granted", "changed_at": "2026-01-01T00:00:00"},
            422,
            "body.changed_at",
        ),
        ("email", {"status": "granted", "proof": "x" * 501}, 422, "body.proof"),
        ("email", {"status": "granted", "colour": "blue"}, 422, "body.colour"),
        ("email", {"status": "revoked", "double_opt_in": True}, 422, "body.double_opt_in"),
        ("line", {"status": "granted", "double_opt_in": True}, 422, "body.double_opt_in"),
        ("push", {"status": "granted", "double_opt_in": True}, 422, "body.double_opt_in"),
        ("email", {"status": "granted", "source": "import"}, 403, None),
    ],
)
async def test_bad_statements_are_problems_and_change_nothing(
    client: httpx.AsyncClient,
    pos: dict[str, str],
    database_url: str,
    channel: str,
    body: dict[str, Any],
    status: int,
    field: str | None,
) -> None:
    contact = await sign_up(client, pos)
    response = await put(client, pos, contact, channel, **body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    if field:
        assert field in [e["field"] for e in response.json()["errors"]]
    assert await history(client, pos, contact) == []
    assert await consent_events(database_url) == []


async def test_double_opt_in_needs_an_address(
    client: httpx.AsyncClient, pos: dict[str, str]
) -> None:
    contact = await sign_up(client, pos, email=None, phone="0129998888")
    no_email = await put(client, pos, contact, "email", status="granted", double_opt_in=True)
    assert no_email.status_code == 422
    assert "no email" in no_email.json()["errors"][0]["message"]
    has_phone = await put(client, pos, contact, "whatsapp", status="granted", double_opt_in=True)
    assert has_phone.status_code == 200, has_phone.text


async def test_unknown_merged_and_erased_contacts(
    client: httpx.AsyncClient, pos: dict[str, str], admin: dict[str, str], database_url: str
) -> None:
    unknown = str(uuid.uuid4())
    assert (await put(client, admin, unknown, "email", status="granted")).status_code == 404
    for path in ("consents", "consents/history", "consents/email/unsubscribe-link"):
        response = await client.get(f"/v1/contacts/{unknown}/{path}", headers=admin)
        assert response.status_code == 404, path
    survivor = await sign_up(client, pos)
    merged = await sign_up(client, pos, email="dup@example.my", phone="0129998888")
    erased = await sign_up(client, pos, email="gone@example.my", phone="0129997777")
    await sql(
        database_url,
        "UPDATE contacts.contacts SET status = 'merged', merged_into = :s WHERE id = :m",
        s=uuid.UUID(survivor),
        m=uuid.UUID(merged),
    )
    await sql(
        database_url,
        "UPDATE contacts.contacts SET status = 'erased' WHERE id = :e",
        e=uuid.UUID(erased),
    )
    response = await put(client, admin, merged, "email", status="granted")
    assert response.status_code == 409
    assert response.json()["merged_into"] == survivor
    assert (await put(client, admin, erased, "sms", status="revoked")).status_code == 409
    link = await client.get(f"/v1/contacts/{erased}/consents/sms/unsubscribe-link", headers=admin)
    assert link.status_code == 409


async def test_scopes(
    client: httpx.AsyncClient, pos: dict[str, str], reader: dict[str, str]
) -> None:
    contact = await sign_up(client, pos)
    assert (await put(client, reader, contact, "email", status="granted")).status_code == 403
    assert (await put(client, {}, contact, "email", status="granted")).status_code == 401
    link = f"/v1/contacts/{contact}/consents/email/unsubscribe-link"
    assert (await client.get(link, headers=pos)).status_code == 403
    assert (await client.get(f"/v1/contacts/{contact}/consents")).status_code == 401
    assert (await client.get(f"/v1/contacts/{contact}/consents", headers=reader)).status_code == 200


async def test_double_opt_in_confirmation(
    client: httpx.AsyncClient,
    pos: dict[str, str],
    reader: dict[str, str],
    settings: Settings,
    database_url: str,
) -> None:
    contact = await sign_up(client, pos, locale="ms-MY")
    asked = await put(client, pos, contact, "email", status="granted", double_opt_in=True)
    assert asked.status_code == 200, asked.text
    body = asked.json()
    assert (body["outcome"], body["consent"]["status"]) == ("changed", "pending")
    assert body["confirmation_requested"] is True
    assert "token" not in json.dumps(body), "the caller must not be able to confirm for them"
    events = await consent_events(database_url)
    assert [kind for kind, _ in events] == ["consent.changed", "consent.confirmation_requested"]
    request = events[1][1]
    assert (request["address"], request["locale"]) == ("aisyah@example.my", "ms-MY")
    token = request["confirmation_token"]
    assert request["confirm_url"].startswith(
        f"{settings.public_base_url}/v1/contacts/consents/confirm?token="
    )

    page = await client.get("/v1/contacts/consents/confirm", params={"token": token})
    assert page.status_code == 200
    assert '<form method="post">' in page.text
    assert (await current(client, reader, contact))["email"]["status"] == "pending"

    confirmed = await client.post("/v1/contacts/consents/confirm", json={"token": token})
    assert confirmed.status_code == 200, confirmed.text
    assert (confirmed.json()["status"], confirmed.json()["outcome"]) == ("granted", "changed")
    state = (await current(client, reader, contact))["email"]
    assert (state["status"], state["source"]) == ("granted", "confirmation-link")
    jti = consent_tokens.verify(settings, "confirm", token).token_id
    assert state["proof"] == f"double opt-in token {jti}"

    twice = await client.post("/v1/contacts/consents/confirm", params={"token": token})
    assert twice.status_code == 200
    assert twice.json()["outcome"] == "unchanged"
    events = await consent_events(database_url)
    assert [d.get("status") for _, d in events] == ["pending", None, "granted"]
    assert [h["status"] for h in await history(client, reader, contact)] == [
        "granted",
        "pending",
    ]
    regrant = await put(client, pos, contact, "email", status="granted", double_opt_in=True)
    assert regrant.json()["outcome"] == "already_granted"
    assert len(await consent_events(database_url)) == 3


async def test_confirm_refuses_bad_tokens_and_changes_nothing(
    client: httpx.AsyncClient,
    pos: dict[str, str],
    reader: dict[str, str],
    settings: Settings,
    database_url: str,
) -> None:
    contact = await sign_up(client, pos)
    await put(client, pos, contact, "email", status="granted", double_opt_in=True)
    cid = uuid.UUID(contact)
    other = Settings(database_url=database_url, jwt_secret="another-deployment-key-" * 3)
    bad = {
        "forged": consent_tokens.issue(other, "confirm", cid, "email", address="aisyah@example.my")[
            0
        ],
        "expired": consent_tokens.issue(
            settings,
            "confirm",
            cid,
            "email",
            address="aisyah@example.my",
            now=datetime.now(UTC) - timedelta(days=8),
        )[0],
        "unsubscribe": consent_tokens.issue(settings, "unsubscribe", cid, "email")[0],
        "bearer": issue_token(settings, subject=contact, scopes=[Scope.ADMIN]),
        "garbage": "not.a.token",
    }
    for name, token in bad.items():
        response = await client.post("/v1/contacts/consents/confirm", json={"token": token})
        assert response.status_code == 400, (name, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        expected = "consent-token-expired" if name == "expired" else "consent-token-invalid"
        assert response.json()["type"].endswith(expected), name
    page = await client.get("/v1/contacts/consents/confirm", params={"token": bad["forged"]})
    assert page.status_code == 400
    assert (await client.post("/v1/contacts/consents/confirm")).status_code == 422
    assert (await current(client, reader, contact))["email"]["status"] == "pending"
    assert len(await consent_events(database_url)) == 2


async def test_confirm_refused_after_revoke_or_address_change(
    client: httpx.AsyncClient,
    pos: dict[str, str],
    admin: dict[str, str],
    database_url: str,
) -> None:
    contact = await sign_up(client, pos)
    await put(client, pos, contact, "email", status="granted", double_opt_in=True)
    await put(client, pos, contact, "sms", status="granted", double_opt_in=True)
    tokens = {
        data["channel"]: data["confirmation_token"]
        for kind, data in await consent_events(database_url)
        if kind == "consent.confirmation_requested"
    }
    await put(client, admin, contact, "email", status="revoked")
    refused = await client.post("/v1/contacts/consents/confirm", json={"token": tokens["email"]})
    assert refused.status_code == 409
    assert refused.json()["type"].endswith("consent-not-pending")
    changed = await client.patch(
        f"/v1/contacts/{contact}", json={"phone": "0129990000"}, headers=admin
    )
    assert changed.status_code == 200
    moved = await client.post("/v1/contacts/consents/confirm", json={"token": tokens["sms"]})
    assert moved.status_code == 409
    assert moved.json()["type"].endswith("consent-address-changed")
    state = await current(client, admin, contact)
    assert (state["email"]["status"], state["sms"]["status"]) == ("revoked", "pending")


async def test_one_click_unsubscribe(
    client: httpx.AsyncClient,
    pos: dict[str, str],
    admin: dict[str, str],
    settings: Settings,
    database_url: str,
) -> None:
    contact = await sign_up(client, pos)
    await put(client, pos, contact, "email", status="granted")
    await put(client, pos, contact, "sms", status="granted")
    minted = await client.get(
        f"/v1/contacts/{contact}/consents/email/unsubscribe-link", headers=admin
    )
    assert minted.status_code == 200, minted.text
    link = minted.json()
    assert link["url"].startswith(f"{settings.public_base_url}/v1/contacts/unsubscribe?token=")
    assert link["headers"] == {
        "List-Unsubscribe": f"<{link['url']}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    assert datetime.fromisoformat(link["expires_at"]) > datetime.now(UTC) + timedelta(days=300)
    path = link["url"].removeprefix(settings.public_base_url)

    page = await client.get(path)
    assert page.status_code == 200
    assert 'name="List-Unsubscribe" value="One-Click"' in page.text
    assert (await current(client, admin, contact))["email"]["status"] == "granted"

    one_click = await client.post(
        path,
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert one_click.status_code == 200, one_click.text
    assert (one_click.json()["status"], one_click.json()["outcome"]) == ("revoked", "changed")
    # RFC 8058's own example posts multipart/form-data; a repeat changes nothing.
    boundary = "---FormBoundaryjWmhtjORrn"
    multipart = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
        f"One-Click\r\n--{boundary}--\r\n"
    ).encode()
    repeat = await client.post(
        path,
        content=multipart,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert repeat.status_code == 200
    assert repeat.json()["outcome"] == "unchanged"

    state = await current(client, admin, contact)
    assert (state["email"]["status"], state["email"]["source"]) == ("revoked", "unsubscribe-link")
    assert state["email"]["proof"].startswith("unsubscribe token ")
    assert state["sms"]["status"] == "granted", "a link revokes its own channel only"
    statuses = [(d["channel"], d["status"]) for _, d in await consent_events(database_url)]
    assert statuses == [("email", "granted"), ("sms", "granted"), ("email", "revoked")]
    assert len(await history(client, admin, contact, channel="email")) == 2


async def test_unsubscribe_refuses_bad_tokens_and_changes_nothing(
    client: httpx.AsyncClient,
    pos: dict[str, str],
    settings: Settings,
    database_url: str,
) -> None:
    contact = await sign_up(client, pos)
    await put(client, pos, contact, "email", status="granted")
    cid = uuid.UUID(contact)
    other = Settings(database_url=database_url, jwt_secret="another-deployment-key-" * 3)
    bad = {
        "forged": consent_tokens.issue(other, "unsubscribe", cid, "email")[0],
        "expired": consent_tokens.issue(
            settings, "unsubscribe", cid, "email", ttl=timedelta(seconds=-1)
        )[0],
        "confirm": consent_tokens.issue(settings, "confirm", cid, "email", address="a@b.my")[0],
        "tampered": consent_tokens.issue(settings, "unsubscribe", cid, "email")[0][:-2] + "xx",
        "bearer": issue_token(settings, subject=contact, scopes=[Scope.ADMIN]),
    }
    for name, token in bad.items():
        response = await client.post("/v1/contacts/unsubscribe", params={"token": token})
        assert response.status_code == 400, (name, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    assert (await client.post("/v1/contacts/unsubscribe")).status_code == 422
    assert (await current(client, pos, contact))["email"]["status"] == "granted"
    assert len(await consent_events(database_url)) == 1


async def test_unsubscribe_follows_a_merge_and_ignores_an_erasure(
    client: httpx.AsyncClient, pos: dict[str, str], settings: Settings, database_url: str
) -> None:
    survivor = await sign_up(client, pos)
    duplicate = await sign_up(client, pos, email="dup@example.my", phone="0129998888")
    token, _ = consent_tokens.issue(settings, "unsubscribe", uuid.UUID(duplicate), "sms")
    await sql(
        database_url,
        "UPDATE contacts.contacts SET status = 'merged', merged_into = :s WHERE id = :d",
        s=uuid.UUID(survivor),
        d=uuid.UUID(duplicate),
    )
    response = await client.post("/v1/contacts/unsubscribe", params={"token": token})
    assert response.status_code == 200, response.text
    assert (await current(client, pos, survivor))["sms"]["status"] == "revoked"
    assert await current(client, pos, duplicate) == {}
    await sql(
        database_url,
        "UPDATE contacts.contacts SET status = 'erased' WHERE id = :s",
        s=uuid.UUID(survivor),
    )
    erased = await client.post("/v1/contacts/unsubscribe", params={"token": token})
    assert erased.status_code == 200, "an erased customer gets nothing anyway"
    assert erased.json()["outcome"] == "unchanged"


async def test_browser_gets_a_page_after_pressing_the_button(
    client: httpx.AsyncClient, pos: dict[str, str], settings: Settings
) -> None:
    contact = await sign_up(client, pos)
    token, _ = consent_tokens.issue(settings, "unsubscribe", uuid.UUID(contact), "whatsapp")
    response = await client.post(
        "/v1/contacts/unsubscribe",
        params={"token": token},
        data={"List-Unsubscribe": "One-Click"},
        headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "no longer receive" in response.text


async def test_history_pages_newest_first(
    client: httpx.AsyncClient, pos: dict[str, str], admin: dict[str, str]
) -> None:
    contact = await sign_up(client, pos)
    start = datetime.now(UTC) - timedelta(days=10)
    for day in range(5):
        status = "granted" if day % 2 == 0 else "revoked"
        at = (start + timedelta(days=day)).isoformat()
        response = await put(client, admin, contact, "email", status=status, changed_at=at)
        assert response.status_code == 200, response.text
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = await client.get(
            f"/v1/contacts/{contact}/consents/history", params=params, headers=admin
        )
        seen += [item["changed_at"] for item in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 5
    assert seen == sorted(seen, reverse=True)
    bad = await client.get(
        f"/v1/contacts/{contact}/consents/history", params={"cursor": "garbage"}, headers=admin
    )
    assert bad.status_code == 422
    assert await history(client, admin, contact, channel="sms") == []


def test_tokens_name_one_contact_and_channel() -> None:
    settings = Settings(jwt_secret=SECRET)
    contact = uuid.uuid4()
    token, issued = consent_tokens.issue(settings, "unsubscribe", contact, "line")
    verified = consent_tokens.verify(settings, "unsubscribe", token)
    assert (verified.contact_id, verified.channel) == (contact, "line")
    assert verified.token_id == issued.token_id


async def test_concurrent_statements_leave_state_events_and_history_consistent(
    client: httpx.AsyncClient, pos: dict[str, str], database_url: str
) -> None:
    contact = await sign_up(client, pos)
    statuses = ["granted", "revoked"] * 4
    responses = await asyncio.gather(
        *[put(client, pos, contact, "email", status=status) for status in statuses]
    )
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    events = [d["status"] for _, d in await consent_events(database_url)]
    assert events, "at least the first statement changed the state"
    assert all(a != b for a, b in itertools.pairwise(events)), "one event per change"
    assert len(await history(client, pos, contact)) == len(statuses)
    assert (await current(client, pos, contact))["email"]["status"] == events[-1]
