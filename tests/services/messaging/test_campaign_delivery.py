"""A campaign to a 10,000-customer segment, delivered through a real SMTP server (aiosmtpd).

Every eligible customer receives exactly one message; nobody without consent or over the
frequency cap receives one; customers in quiet hours are deferred, then sent. The same
holds after the worker is killed mid-campaign and a new one starts, and after the
campaign's materialisation and completion check run again (a redelivered event).

The clock is passed to the dispatcher (`run_once(now=...)`), so quiet hours do not depend
on when the test runs: at T1 (05:00 UTC) it is 13:00 in Kuala Lumpur and 21:00 in Los
Angeles, where the default quiet hours (21:00-09:00) have just begun.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.messaging import campaign_outcomes, campaigns
from services.messaging.dispatcher import Dispatcher
from shared.settings import Settings
from tests.services.messaging.test_campaigns_api import (
    CAMPAIGNS,
    SEGMENT,
    add_template,
    seed,
    sql,
)
from tests.support.smtp_sink import Sink, free_port

Sessions = async_sessionmaker[AsyncSession]
DAY_ZONE = "Asia/Kuala_Lumpur"
NIGHT_ZONE = "America/Los_Angeles"


class CrashableSink(Sink):
    """The recording sink, able to freeze every new SMTP transaction so the test can kill
    the worker with messages in flight.

    While frozen, `MAIL FROM` is held; once released it is answered 451, so no message of
    the killed batch can be accepted: from the server's side, the worker died before any
    of those transactions got past their first command. Freezing at the first command
    (not at DATA) keeps this deterministic: a message whose DATA was already on the wire
    when the worker died could still be accepted, which is the one window where email is
    at-least-once (the resend carries the same Message-ID; `test_dispatcher` covers it).
    """

    def __init__(self) -> None:
        super().__init__()
        self.frozen = False
        self.holding = threading.Event()
        self.release = threading.Event()
        self.dropped = 0

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: Any
    ) -> str:
        if self.frozen:
            self.holding.set()
            while not self.release.is_set():  # noqa: ASYNC110 - set from the test's thread
                await asyncio.sleep(0.005)
            self.dropped += 1
            return "451 4.3.0 Connection lost"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"


@pytest.fixture
def sink() -> Iterator[tuple[CrashableSink, int]]:
    running = CrashableSink()
    port = free_port()
    controller = Controller(running, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield running, port
    finally:
        running.release.set()
        controller.stop()


def next_five_utc() -> datetime:
    """05:00 UTC tomorrow: daytime in Kuala Lumpur, quiet hours in Los Angeles."""
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date()
    return datetime.combine(tomorrow, time(5), tzinfo=UTC)


async def drain(dispatcher: Dispatcher, now: datetime) -> int:
    """Run rounds at the clock `now` until nothing more is due."""
    total = 0
    while handled := await dispatcher.run_once(1000, now=now):
        total += handled
    return total


async def test_a_10000_customer_campaign_reaches_each_eligible_customer_once(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    sessions: Sessions,
    settings: Settings,
    sink: tuple[CrashableSink, int],
) -> None:
    mail, port = sink
    mail_settings = settings.model_copy(
        update={
            "smtp_port": port,
            "smtp_concurrency": 16,
            "messaging_quiet_hours": (21, 9),
            "messaging_frequency_caps": {"email": (3, 7)},
            "public_base_url": "https://crm.example.my",
        }
    )
    t1 = next_five_utc()
    await add_template(sessions)
    day = await seed(sessions, 8000, prefix="day", time_zone=DAY_ZONE)
    night = await seed(sessions, 1000, prefix="night", time_zone=NIGHT_ZONE)
    await seed(sessions, 500, prefix="noconsent", consent="revoked", time_zone=DAY_ZONE)
    capped = await seed(sessions, 500, prefix="capped", time_zone=DAY_ZONE)
    # The capped customers already had three marketing emails this week.
    await sql(
        sessions,
        """
        INSERT INTO messaging.sends (id, source, customer_id, channel, status, payload,
                                     not_before, attempts, created_at, sent_at)
        SELECT gen_random_uuid(), 'trigger:earlier:' || k, c, 'email', 'sent',
               '{"template": "promo", "marketing": true, "data": {}}', :at, 1, :at, :at
        FROM unnest(CAST(:ids AS uuid[])) AS c, generate_series(1, 3) AS k
        """,
        ids=capped,
        at=t1 - timedelta(days=1),
    )
    eligible = {f"day{n}@example.com" for n in range(1, 8001)} | {
        f"night{n}@example.com" for n in range(1, 1001)
    }
    assert len(day) + len(night) == len(eligible)

    campaign_id = (
        await client.post(
            CAMPAIGNS,
            json={
                "name": "Ten thousand",
                "audience": {"segment_id": str(SEGMENT)},
                "channels": ["email"],
                "template": "promo",
                "offer": {"kind": "voucher", "code_template": "TT-{code}"},
            },
            headers=admin,
        )
    ).json()["id"]
    started = await client.post(f"{CAMPAIGNS}/{campaign_id}/start", headers=admin)
    assert started.status_code == 200, started.text
    assert started.json()["progress"]["queued"] == 9500
    assert started.json()["progress"]["skipped"] == {"no-consent": 500}

    # The first worker sends a few batches, then dies with a batch reserved and its
    # SMTP transactions in flight.
    first = Dispatcher(sessions, mail_settings)
    for _ in range(3):
        assert await first.run_once(1000, now=t1) > 0
    assert 0 < len(mail.messages) < 9000
    claim = await first.claim(1000, now=t1)
    assert claim.jobs
    mail.frozen = True
    worker = asyncio.create_task(first.deliver(claim.jobs))
    while not mail.holding.is_set():
        await asyncio.sleep(0.01)
        assert not worker.done(), worker
    worker.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await worker
    mail.release.set()
    mail.frozen = False
    with contextlib.suppress(Exception):
        await first.aclose()
    stranded = await sql(sessions, "SELECT count(*) FROM messaging.sends WHERE status = 'reserved'")
    assert stranded == [(len(claim.jobs),)]

    # A new worker reconciles what the dead one reserved and carries on.
    second = Dispatcher(sessions, mail_settings)
    try:
        later = t1 + timedelta(minutes=11)
        assert await second.reconcile(now=later) == len(claim.jobs)
        await drain(second, later)
        progress = (await client.get(f"{CAMPAIGNS}/{campaign_id}", headers=admin)).json()
        assert progress["progress"]["deferred"] == 1000  # Los Angeles is asleep
        assert progress["progress"]["sent"] == 8000
        assert await campaign_outcomes.check_campaigns(sessions, settings, now=later) == 0

        # Morning in Los Angeles: the deferred are sent.
        morning = t1 + timedelta(hours=12, minutes=1)
        await drain(second, morning)
        assert await campaign_outcomes.check_campaigns(sessions, settings, now=morning) == 1

        # Every event redelivered: materialisation and completion run again; nothing doubles.
        async with sessions.begin() as session:
            campaign = await campaigns.get(session, uuid.UUID(campaign_id))
            assert campaign is not None
            await campaigns.materialise(
                session, campaign, now=morning, business=ZoneInfo(settings.messaging_time_zone)
            )
        assert await campaign_outcomes.check_campaigns(sessions, settings, now=morning) == 0
        assert await drain(second, morning + timedelta(hours=1)) == 0
    finally:
        await second.aclose()

    received = Counter(str(message["To"]) for message in mail.messages)
    assert set(received) == eligible
    assert max(received.values()) == 1
    assert mail.dropped > 0
    view = (await client.get(f"{CAMPAIGNS}/{campaign_id}", headers=admin)).json()
    assert view["status"] == "completed"
    assert view["progress"]["sent"] == 9000
    assert view["progress"]["skipped"] == {"no-consent": 500, "frequency-cap": 500}
    assert view["progress"]["queued"] == view["progress"]["reserved"] == 0
    completed = await sql(
        sessions, "SELECT count(*) FROM messaging.outbox WHERE event_type = 'campaign.completed'"
    )
    assert completed == [(1,)]
    sent_events = await sql(
        sessions, "SELECT count(*) FROM messaging.outbox WHERE event_type = 'message.sent'"
    )
    assert sent_events == [(9000,)]
