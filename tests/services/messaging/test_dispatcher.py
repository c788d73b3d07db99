"""The dispatcher against a real SMTP server (aiosmtpd): once, policy at send time, failures
classified, and what a crash between reserve and record leaves behind."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.messaging import links
from services.messaging.dispatcher import Dispatcher, dispatch
from services.messaging.models import campaigns, recipients
from shared.settings import Settings
from tests.services.messaging.send_factories import enqueue, ledger, make_recipient, make_template
from tests.support.smtp_sink import Sink, smtp_sink, text_of

Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
def sink() -> Iterator[tuple[Sink, int]]:
    with smtp_sink() as running:
        yield running


@pytest.fixture
def mail_settings(settings: Settings, sink: tuple[Sink, int]) -> Settings:
    return settings.model_copy(
        update={
            "smtp_port": sink[1],
            "smtp_concurrency": 4,
            "messaging_quiet_hours": (0, 0),
            "messaging_frequency_caps": {"email": (1, 7)},
            "public_base_url": "https://crm.example.my",
        }
    )


@pytest.fixture
async def dispatcher(sessions: Sessions, mail_settings: Settings) -> AsyncIterator[Dispatcher]:
    d = Dispatcher(sessions, mail_settings, reserve_timeout=timedelta(0))
    yield d
    await d.aclose()


async def outbox_types(sessions: Sessions) -> list[str]:
    async with sessions() as session:
        rows = await session.execute(sa.text("SELECT event_type FROM messaging.outbox ORDER BY 1"))
        return [r[0] for r in rows]


async def test_a_send_arrives_once_with_its_headers(
    sessions: Sessions, dispatcher: Dispatcher, sink: tuple[Sink, int]
) -> None:
    await make_template(sessions, body="Hai {{ name }}, kod {{ voucher_code }}: {{ points }} mata.")
    cid = await make_recipient(sessions)
    sid = await enqueue(sessions, cid)

    assert await dispatcher.run_once(100) == 1
    assert await dispatcher.run_once(100) == 0

    [message] = sink[0].messages
    assert message["Message-ID"] == f"<{sid}@example.com>"
    assert message["List-Unsubscribe"].startswith(
        "<https://crm.example.my/v1/contacts/unsubscribe?token="
    )
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Subject"] == "Hello Aisyah"
    assert "Hai Aisyah, kod SPRING10: 1,250 mata." in text_of(message)
    [row] = await ledger(sessions)
    assert (row["status"], row["provider_message_id"], row["attempts"]) == (
        "sent",
        message["Message-ID"],
        1,
    )
    assert await outbox_types(sessions) == ["message.sent"]


@pytest.mark.parametrize("key", ["survey_url", "confirm_url"])
async def test_a_journeys_own_link_is_the_templates_link(
    sessions: Sessions, dispatcher: Dispatcher, sink: tuple[Sink, int], key: str
) -> None:
    """Surveys and double opt-in carry their link under its own name; `{{ link }}` shows it,
    as the tracked link that records the click and redirects there."""
    await make_template(sessions, name="journey", body="Tell us: {{ link }}")
    cid = await make_recipient(sessions)
    url = f"https://crm.example.my/{key}?token=abc"
    sid = await enqueue(
        sessions, cid, source=f"trigger:{key}", template="journey", payload={key: url}
    )
    assert await dispatcher.run_once(100) == 1
    [message] = sink[0].messages
    tracked = links.tracked_url(dispatcher.settings, sid, url)
    assert f"Tell us: {tracked}" in text_of(message)
    token = tracked.partition("?token=")[2]
    assert links.verify_click(dispatcher.settings, token) == (sid, url)


async def test_a_5xx_marks_the_address_undeliverable(
    sessions: Sessions, dispatcher: Dispatcher, sink: tuple[Sink, int]
) -> None:
    await make_template(sessions)
    cid = await make_recipient(sessions, email="gone@example.my")
    sink[0].replies["gone@example.my"] = "550 5.1.1 No such user"
    await enqueue(sessions, cid)

    await dispatcher.run_once(100)

    [row] = await ledger(sessions)
    assert row["status"] == "failed" and "550" in row["reason"]
    async with sessions() as session:
        marked = (
            await session.execute(
                sa.select(recipients.c.undeliverable).where(recipients.c.customer_id == cid)
            )
        ).scalar_one()
    assert "email" in marked
    assert await outbox_types(sessions) == ["message.failed"]
    # The address is not used again.
    await enqueue(sessions, cid, source="campaign:later")
    later = [r for r in await ledger(sessions) if r["source"] == "campaign:later"]
    assert (later[0]["status"], later[0]["reason"]) == ("skipped", "undeliverable")


async def test_a_4xx_retries_later_and_then_sends(
    sessions: Sessions, dispatcher: Dispatcher, sink: tuple[Sink, int]
) -> None:
    await make_template(sessions)
    cid = await make_recipient(sessions, email="busy@example.my")
    sink[0].replies["busy@example.my"] = "450 4.2.1 Mailbox busy"
    await enqueue(sessions, cid)

    await dispatcher.run_once(100)
    [row] = await ledger(sessions)
    assert (row["status"], row["attempts"]) == ("queued", 1)
    assert row["not_before"] > datetime.now(UTC) + timedelta(seconds=30)
    assert sink[0].messages == []

    del sink[0].replies["busy@example.my"]
    await dispatcher.run_once(100, now=row["not_before"])
    [row] = await ledger(sessions)
    assert (row["status"], row["attempts"]) == ("sent", 2)
    assert len(sink[0].to("busy@example.my")) == 1


async def test_a_rate_limit_reply_requeues_without_spending_an_attempt(
    sessions: Sessions, dispatcher: Dispatcher, sink: tuple[Sink, int]
) -> None:
    await make_template(sessions)
    cid = await make_recipient(sessions, email="slow@example.my")
    sink[0].replies["slow@example.my"] = "451 4.7.1 Rate limit exceeded, slow down"
    await enqueue(sessions, cid)

    await dispatcher.run_once(100)

    [row] = await ledger(sessions)
    assert (row["status"], row["attempts"]) == ("queued", 0)
    assert "Rate limit" in row["last_error"]


async def test_quiet_hours_defer_then_send(
    sessions: Sessions, mail_settings: Settings, sink: tuple[Sink, int]
) -> None:
    now = datetime.now(UTC)
    quiet = mail_settings.model_copy(
        update={"messaging_quiet_hours": (now.hour, (now.hour + 2) % 24)}
    )
    dispatcher = Dispatcher(sessions, quiet)
    await make_template(sessions)
    cid = await make_recipient(sessions, time_zone="UTC")
    await enqueue(sessions, cid)

    await dispatcher.run_once(100)
    [row] = await ledger(sessions)
    assert row["status"] == "queued"
    assert row["not_before"] == now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=2)
    assert sink[0].messages == []

    await dispatcher.run_once(100, now=row["not_before"])
    [row] = await ledger(sessions)
    assert row["status"] == "sent"
    assert len(sink[0].messages) == 1
    await dispatcher.aclose()


async def test_a_frequency_cap_skips_but_transactional_mail_goes(
    sessions: Sessions, dispatcher: Dispatcher, sink: tuple[Sink, int]
) -> None:
    await make_template(sessions)
    await make_template(sessions, name="receipt", subject="Receipt", body="Thanks {{ name }}")
    cid = await make_recipient(sessions)
    await enqueue(sessions, cid, source="campaign:first")
    await dispatcher.run_once(100)
    await enqueue(sessions, cid, source="campaign:second")
    await enqueue(sessions, cid, source="trigger:receipt:1", template="receipt", marketing=False)

    await dispatcher.run_once(100)

    rows = {r["source"]: r for r in await ledger(sessions)}
    assert rows["campaign:first"]["status"] == "sent"
    assert (rows["campaign:second"]["status"], rows["campaign:second"]["reason"]) == (
        "skipped",
        "frequency-cap",
    )
    assert rows["trigger:receipt:1"]["status"] == "sent"
    assert len(sink[0].messages) == 2


async def test_consent_revoked_after_enqueue_stops_the_send(
    sessions: Sessions, dispatcher: Dispatcher, sink: tuple[Sink, int]
) -> None:
    await make_template(sessions)
    cid = await make_recipient(sessions)
    await enqueue(sessions, cid)
    async with sessions.begin() as session:
        await session.execute(
            sa.update(recipients)
            .where(recipients.c.customer_id == cid)
            .values(consents={"email": "revoked"})
        )

    await dispatcher.run_once(100)

    [row] = await ledger(sessions)
    assert (row["status"], row["reason"]) == ("skipped", "no-consent")
    assert sink[0].messages == []


async def test_campaign_throttle_and_pause(
    sessions: Sessions, dispatcher: Dispatcher, sink: tuple[Sink, int]
) -> None:
    await make_template(sessions)
    now = datetime.now(UTC)
    campaign_id = uuid.uuid4()
    async with sessions.begin() as session:
        await session.execute(
            sa.insert(campaigns).values(
                id=campaign_id,
                name="Slow",
                status="running",
                audience={},
                channels=["email"],
                template="promo",
                schedule={},
                throttle_per_minute=2,
                attribution_days=7,
                created_at=now,
                updated_at=now,
            )
        )
    for _ in range(5):
        await enqueue(sessions, await make_recipient(sessions), source=f"campaign:{campaign_id}")

    await dispatcher.run_once(100)
    assert len(sink[0].messages) == 2
    statuses = sorted(r["status"] for r in await ledger(sessions))
    assert statuses == ["queued"] * 3 + ["sent"] * 2

    async with sessions.begin() as session:
        await session.execute(sa.update(campaigns).values(status="paused"))
    await dispatcher.run_once(100, now=now + timedelta(minutes=2))
    assert len(sink[0].messages) == 2

    async with sessions.begin() as session:
        await session.execute(sa.update(campaigns).values(status="running"))
    await dispatcher.run_once(100, now=now + timedelta(minutes=5))
    assert len(sink[0].messages) == 4


async def test_a_crash_after_reserve_before_sending_sends_once_after_reconcile(
    sessions: Sessions, mail_settings: Settings, sink: tuple[Sink, int]
) -> None:
    await make_template(sessions)
    for _ in range(3):
        await enqueue(sessions, await make_recipient(sessions))
    crashed = Dispatcher(sessions, mail_settings)
    claim = await crashed.claim(100)  # reserved and committed; then the process dies
    assert len(claim.jobs) == 3
    assert {r["status"] for r in await ledger(sessions)} == {"reserved"}

    restarted = Dispatcher(sessions, mail_settings, reserve_timeout=timedelta(0))
    assert await restarted.run(until_idle=True) == 3
    assert len(sink[0].messages) == 3
    assert {r["status"] for r in await ledger(sessions)} == {"sent"}
    await restarted.aclose()


async def test_a_crash_after_the_provider_took_it_resends_with_the_same_message_id(
    sessions: Sessions, mail_settings: Settings, sink: tuple[Sink, int]
) -> None:
    """SMTP has no idempotency key: the design is at-least-once across this window, and the
    copy carries the same Message-ID so a receiving system can drop it."""
    await make_template(sessions)
    sid = await enqueue(sessions, await make_recipient(sessions))
    crashed = Dispatcher(sessions, mail_settings)
    claim = await crashed.claim(100)
    await crashed.deliver(claim.jobs)  # accepted by the server; the record never happens
    await crashed.aclose()

    restarted = Dispatcher(sessions, mail_settings, reserve_timeout=timedelta(0))
    await restarted.run(until_idle=True)
    await restarted.aclose()

    assert [m["Message-ID"] for m in sink[0].messages] == [f"<{sid}@example.com>"] * 2
    [row] = await ledger(sessions)
    assert row["status"] == "sent"
    assert await outbox_types(sessions) == ["message.sent"]


async def test_reconcile_leaves_recent_reservations_alone(
    sessions: Sessions, mail_settings: Settings
) -> None:
    await make_template(sessions)
    await enqueue(sessions, await make_recipient(sessions))
    busy = Dispatcher(sessions, mail_settings)
    await busy.claim(100)
    other = Dispatcher(sessions, mail_settings)  # default timeout: ten minutes
    assert await other.reconcile() == 0
    assert await other.reconcile(now=datetime.now(UTC) + timedelta(minutes=11)) == 1
    await busy.aclose()
    await other.aclose()


async def test_the_worker_job_drains_the_ledger(
    sessions: Sessions, mail_settings: Settings, sink: tuple[Sink, int]
) -> None:
    await make_template(sessions)
    for _ in range(3):
        await enqueue(sessions, await make_recipient(sessions))
    assert await dispatch(sessions, mail_settings) == 3
    assert len(sink[0].messages) == 3
    assert await dispatch(sessions, mail_settings) == 0
