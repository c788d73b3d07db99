"""What the channels tell after sending, through the real app: tracked clicks, the open
pixel, signed provider callbacks, and the campaign results that count them."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.messaging import links
from services.messaging.channels.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature
from services.messaging.dispatcher import Dispatcher
from services.messaging.models import recipients, sends
from shared.settings import Settings
from tests.services.messaging.send_factories import enqueue, make_recipient, make_template
from tests.services.messaging.test_campaigns_api import CAMPAIGNS, new_campaign, seed
from tests.support.auth import SECRET
from tests.support.smtp_sink import Sink, smtp_sink, text_of

Sessions = async_sessionmaker[AsyncSession]
BASE = "https://crm.example.my"
HOOK_SECRET = "provider-callback-secret"
SHOP = "https://shop.example.my/sale?utm=x&lang=ms"
TRACKED = re.compile(re.escape(BASE) + r"/v1/messaging/t/c\?token=[A-Za-z0-9_.%-]+")


@pytest.fixture
def sink() -> Iterator[tuple[Sink, int]]:
    with smtp_sink() as running:
        yield running


@pytest.fixture
def settings(database_url: str, sink: tuple[Sink, int]) -> Settings:
    """The app's settings: a callback secret, public links, a local SMTP server."""
    return Settings(
        database_url=database_url,
        jwt_secret=SecretStr(SECRET),
        messaging_webhook_secret=SecretStr(HOOK_SECRET),
        public_base_url=BASE,
        smtp_port=sink[1],
        smtp_concurrency=4,
        messaging_quiet_hours=(0, 0),
        messaging_frequency_caps={},
    )


@pytest.fixture
async def dispatcher(sessions: Sessions, settings: Settings) -> AsyncIterator[Dispatcher]:
    d = Dispatcher(sessions, settings, reserve_timeout=timedelta(0))
    yield d
    await d.aclose()


def local(url: str) -> str:
    """A public link as a path the test client can follow."""
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == BASE
    return f"{parts.path}?{parts.query}"


async def events(sessions: Sessions, event_type: str) -> list[dict[str, Any]]:
    async with sessions() as session:
        rows = await session.execute(
            sa.text("SELECT payload FROM messaging.outbox WHERE event_type = :t ORDER BY id"),
            {"t": event_type},
        )
        return [json.loads(payload)["data"] for (payload,) in rows]


async def row_of(sessions: Sessions, send_id: uuid.UUID) -> dict[str, Any]:
    async with sessions() as session:
        found = await session.execute(sa.select(sends).where(sends.c.id == send_id))
        return dict(found.mappings().one())


async def sent_message(
    sessions: Sessions, dispatcher: Dispatcher, **payload: Any
) -> tuple[uuid.UUID, uuid.UUID]:
    """One email sent through the dispatcher: (customer id, send id)."""
    await make_template(sessions, body="Hi {{ name }}, see {{ link }} - {{ unsubscribe_url }}")
    customer_id = await make_recipient(sessions)
    send_id = await enqueue(sessions, customer_id, payload=payload or {"offer": {"link": SHOP}})
    assert await dispatcher.run_once(10) == 1
    return customer_id, send_id


def signed(body: dict[str, Any], *, at: float | None = None, secret: str = HOOK_SECRET) -> Any:
    """A provider's callback: the JSON body and its timestamp and signature headers."""
    raw = json.dumps(body).encode()
    timestamp = str(int(at if at is not None else time.time()))
    return {
        "content": raw,
        "headers": {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: signature(secret, timestamp, raw),
        },
    }


def status_url(channel: str = "email") -> str:
    return f"/v1/messaging/providers/{channel}/status"


async def test_a_marketing_mail_carries_the_open_pixel_that_records_opening(
    client: httpx.AsyncClient,
    sessions: Sessions,
    dispatcher: Dispatcher,
    sink: tuple[Sink, int],
    settings: Settings,
) -> None:
    _, send_id = await sent_message(sessions, dispatcher)
    [message] = sink[0].messages
    html_part = message.get_body(preferencelist=("html",))
    assert html_part is not None
    pixel = links.open_pixel_url(settings, send_id)
    assert f'src="{pixel}"' in str(html_part.get_content()).replace("&amp;", "&")
    response = await client.get(local(pixel))
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/gif"
    assert (await row_of(sessions, send_id))["opened_at"] is not None


async def test_a_click_is_recorded_once_and_redirects(
    client: httpx.AsyncClient,
    sessions: Sessions,
    dispatcher: Dispatcher,
    sink: tuple[Sink, int],
    settings: Settings,
) -> None:
    _, send_id = await sent_message(sessions, dispatcher)
    [message] = sink[0].messages
    content = text_of(message)
    # The offer's link is the tracked one; the pixel is only in the HTML alternative.
    assert SHOP not in content and links.OPEN_PATH not in content
    link = TRACKED.search(content)
    assert link is not None
    assert link.group(0) == links.tracked_url(settings, send_id, SHOP)

    for _ in range(2):
        response = await client.get(local(link.group(0)))
        assert response.status_code == 302, response.text
        assert response.headers["location"] == SHOP
    first = (await row_of(sessions, send_id))["clicked_at"]
    assert first is not None
    [clicked] = await events(sessions, "message.clicked")
    assert (clicked["send_id"], clicked["url"]) == (str(send_id), SHOP)
    assert (await row_of(sessions, send_id))["clicked_at"] == first


async def test_a_bad_click_token_redirects_nowhere(
    client: httpx.AsyncClient, sessions: Sessions, settings: Settings
) -> None:
    send_id = uuid.uuid4()
    good = links.tracked_url(settings, send_id, SHOP)
    token = urlsplit(good).query.removeprefix("token=")
    body, _, tag = token.partition(".")
    forged = links.tracked_url(
        settings.model_copy(update={"jwt_secret": SecretStr("another-deployment")}),
        send_id,
        "https://evil.example/",
    )
    opener = links.open_pixel_url(settings, send_id)
    for path in (
        f"{links.CLICK_PATH}?token={body}.{'A' * len(tag)}",  # tampered signature
        local(forged),  # signed with another key
        f"{links.CLICK_PATH}?token={urlsplit(opener).query.removeprefix('token=')}",
        f"{links.CLICK_PATH}?token=garbage",
        links.CLICK_PATH,
    ):
        response = await client.get(path)
        assert response.status_code in (400, 422), path
        assert "location" not in response.headers
    response = await client.get(f"{links.CLICK_PATH}?token=garbage")
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert await events(sessions, "message.clicked") == []
    # Not web links are not wrapped at all.
    assert links.tracked_url(settings, send_id, "tel:+60123456789") == "tel:+60123456789"


async def test_the_open_pixel_records_the_first_open(
    client: httpx.AsyncClient, sessions: Sessions, dispatcher: Dispatcher, settings: Settings
) -> None:
    _, send_id = await sent_message(sessions, dispatcher)
    pixel = local(links.open_pixel_url(settings, send_id))
    for _ in range(2):
        response = await client.get(pixel)
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/gif"
        assert response.content.startswith(b"GIF89a")
        assert "no-store" in response.headers["cache-control"]
    assert (await row_of(sessions, send_id))["opened_at"] is not None
    [opened] = await events(sessions, "message.opened")
    assert opened["send_id"] == str(send_id)
    # A click token is no open token.
    click = urlsplit(links.tracked_url(settings, send_id, SHOP)).query
    assert (await client.get(f"{links.OPEN_PATH}?{click}")).status_code == 400


async def test_a_signed_delivered_report_is_applied_once(
    client: httpx.AsyncClient, sessions: Sessions, dispatcher: Dispatcher
) -> None:
    _, send_id = await sent_message(sessions, dispatcher)
    provider_id = (await row_of(sessions, send_id))["provider_message_id"]
    first = await client.post(
        status_url(), **signed({"send_id": str(send_id), "status": "delivered"})
    )
    assert first.status_code == 200, first.text
    assert first.json() == {"send_id": str(send_id), "status": "delivered", "changed": True}
    # A redelivered report, this time by the provider's own id, changes nothing.
    again = await client.post(
        status_url(), **signed({"provider_message_id": provider_id, "status": "delivered"})
    )
    assert again.json() == {"send_id": str(send_id), "status": "delivered", "changed": False}
    row = await row_of(sessions, send_id)
    assert row["status"] == "delivered" and row["delivered_at"] is not None
    [delivered] = await events(sessions, "message.delivered")
    assert delivered["send_id"] == str(send_id)


async def test_unsigned_stale_and_unknown_reports_change_nothing(
    client: httpx.AsyncClient, sessions: Sessions, dispatcher: Dispatcher
) -> None:
    _, send_id = await sent_message(sessions, dispatcher)
    body = {"send_id": str(send_id), "status": "delivered"}
    bad_signature = await client.post(status_url(), **signed(body, secret="guess"))
    assert bad_signature.status_code == 401
    assert bad_signature.headers["content-type"] == "application/problem+json"
    stale = await client.post(status_url(), **signed(body, at=time.time() - 301))
    assert stale.status_code == 401
    assert "5 minutes" in stale.json()["detail"]
    tampered = signed(body)
    tampered["content"] = json.dumps(body | {"status": "bounced"}).encode()
    assert (await client.post(status_url(), **tampered)).status_code == 401
    unsigned = await client.post(status_url(), json=body)
    assert unsigned.status_code == 401

    assert (await client.post(status_url("sms"), **signed(body))).status_code == 404
    assert (await client.post(status_url("fax"), **signed(body))).status_code == 404
    unknown = {"send_id": str(uuid.uuid4()), "status": "delivered"}
    assert (await client.post(status_url(), **signed(unknown))).status_code == 404
    for invalid, field in (
        ({"status": "delivered"}, "body"),
        ({"send_id": str(send_id), "status": "read"}, "body.status"),
        ({"send_id": str(send_id), "status": "delivered", "extra": 1}, "body.extra"),
    ):
        response = await client.post(status_url(), **signed(invalid))
        assert response.status_code == 422, response.text
        assert field in response.text

    row = await row_of(sessions, send_id)
    assert (row["status"], row["delivered_at"]) == ("sent", None)
    assert await events(sessions, "message.delivered") == []


async def test_a_report_before_the_send_is_recorded_asks_to_come_again(
    client: httpx.AsyncClient, sessions: Sessions
) -> None:
    await make_template(sessions)
    send_id = await enqueue(sessions, await make_recipient(sessions))
    early = await client.post(
        status_url(), **signed({"send_id": str(send_id), "status": "delivered"})
    )
    assert early.status_code == 409
    assert (await row_of(sessions, send_id))["status"] == "queued"


async def test_a_bounce_fails_the_send_and_marks_the_address(
    client: httpx.AsyncClient, sessions: Sessions, dispatcher: Dispatcher
) -> None:
    customer_id, send_id = await sent_message(sessions, dispatcher)
    await client.post(status_url(), **signed({"send_id": str(send_id), "status": "delivered"}))
    bounce = {"send_id": str(send_id), "status": "bounced", "reason": "550 mailbox unknown"}
    for changed in (True, False):
        response = await client.post(status_url(), **signed(bounce))
        assert response.status_code == 200, response.text
        assert response.json() == {"send_id": str(send_id), "status": "failed", "changed": changed}
    row = await row_of(sessions, send_id)
    assert row["status"] == "failed" and row["failed_at"] is not None
    assert row["reason"] == "bounced: 550 mailbox unknown"
    async with sessions() as session:
        marked = (
            await session.execute(
                sa.select(recipients.c.undeliverable).where(recipients.c.customer_id == customer_id)
            )
        ).scalar_one()
    assert "email" in marked
    [failed] = await events(sessions, "message.failed")
    assert (failed["send_id"], failed["permanent"]) == (str(send_id), True)
    # A late delivered report does not undo the bounce.
    late = await client.post(
        status_url(), **signed({"send_id": str(send_id), "status": "delivered"})
    )
    assert late.json()["changed"] is False
    # The address is not used again.
    later = await enqueue(sessions, customer_id, source="campaign:later")
    assert (await row_of(sessions, later))["reason"] == "undeliverable"


async def test_a_failed_report_does_not_mark_the_address(
    client: httpx.AsyncClient, sessions: Sessions, dispatcher: Dispatcher
) -> None:
    customer_id, send_id = await sent_message(sessions, dispatcher)
    response = await client.post(
        status_url(), **signed({"send_id": str(send_id), "status": "failed"})
    )
    assert response.json()["changed"] is True
    async with sessions() as session:
        marked = (
            await session.execute(
                sa.select(recipients.c.undeliverable).where(recipients.c.customer_id == customer_id)
            )
        ).scalar_one()
    assert marked == {}
    [failed] = await events(sessions, "message.failed")
    assert failed["permanent"] is True and failed["reason"] == "failed"


async def test_campaign_results_count_deliveries_opens_and_clicks(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    sessions: Sessions,
    dispatcher: Dispatcher,
    sink: tuple[Sink, int],
    settings: Settings,
) -> None:
    await make_template(sessions, body="Hello {{ name }}: {{ link }}")
    await seed(sessions, 6)
    offer = {"kind": "content", "title": "Sale", "link": SHOP}
    campaign_id = await new_campaign(client, admin, offer=offer)
    started = await client.post(f"{CAMPAIGNS}/{campaign_id}/start", headers=admin)
    assert started.status_code == 200, started.text
    assert await dispatcher.run_once(100) == 6
    assert len(sink[0].messages) == 6
    async with sessions() as session:
        ids = list((await session.execute(sa.select(sends.c.id).order_by(sends.c.id))).scalars())

    for send_id in ids[:4]:
        report = {"send_id": str(send_id), "status": "delivered"}
        assert (await client.post(status_url(), **signed(report))).status_code == 200
    bounce = {"send_id": str(ids[5]), "status": "bounced"}
    assert (await client.post(status_url(), **signed(bounce))).status_code == 200
    for send_id in ids[:3]:
        await client.get(local(links.open_pixel_url(settings, send_id)))
    for message in sink[0].messages:
        if message["X-CRM-Send-Id"] in (str(ids[0]), str(ids[4])):
            link = TRACKED.search(text_of(message))
            assert link is not None
            for _ in range(2):
                assert (await client.get(local(link.group(0)))).status_code == 302

    results = await client.get(f"{CAMPAIGNS}/{campaign_id}/results", headers=admin)
    assert results.status_code == 200, results.text
    funnel = results.json()
    assert {k: funnel[k] for k in ("sent", "delivered", "bounced", "opened", "clicked")} == {
        "sent": 5,
        "delivered": 4,
        "bounced": 1,
        "opened": 3,
        "clicked": 2,
    }


def test_links_in_mail_already_sent_survive_a_key_rotation() -> None:
    old, new = "old-ring-key-" * 4, "new-ring-key-" * 4
    before = Settings(jwt_keys={"2026-06": SecretStr(old)}, jwt_signing_key_id="2026-06")
    during = Settings(
        jwt_keys={"2026-06": SecretStr(old), "2026-12": SecretStr(new)},
        jwt_signing_key_id="2026-12",
    )
    after = Settings(jwt_keys={"2026-12": SecretStr(new)}, jwt_signing_key_id="2026-12")
    send_id = uuid.uuid4()
    sent_before = urlsplit(links.tracked_url(before, send_id, SHOP)).query.removeprefix("token=")
    sent_during = urlsplit(links.tracked_url(during, send_id, SHOP)).query.removeprefix("token=")

    assert links.verify_click(during, sent_before) == (send_id, SHOP)
    assert links.verify_click(after, sent_during) == (send_id, SHOP)
    with pytest.raises(links.InvalidTrackingToken):
        links.verify_click(after, sent_before)
