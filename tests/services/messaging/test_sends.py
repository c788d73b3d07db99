"""`sends.enqueue` / `enqueue_many`: one ledger row per source and customer, whatever happens."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.messaging import sends
from tests.services.messaging.send_factories import ledger, make_recipient

NOW = datetime(2026, 11, 23, 10, tzinfo=UTC)


async def test_enqueue_picks_the_first_reachable_channel_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    cid = await make_recipient(sessions, consents={"sms": "granted"})
    async with sessions.begin() as session:
        first = await sends.enqueue(
            session,
            source="trigger:birthday:2026",
            customer_id=cid,
            channels=["email", "sms"],
            template="birthday",
            payload={"offer": {"voucher_code": "HBD-1"}},
            not_before=NOW,
        )
    async with sessions.begin() as session:
        again = await sends.enqueue(
            session,
            source="trigger:birthday:2026",
            customer_id=cid,
            channels=["email", "sms"],
            template="birthday",
            payload={},
            not_before=NOW,
        )
    assert first is not None and again is None
    [row] = await ledger(sessions)
    assert (row["id"], row["channel"], row["status"]) == (first, "sms", "queued")
    assert row["payload"] == {
        "template": "birthday",
        "marketing": True,
        "data": {"offer": {"voucher_code": "HBD-1"}},
    }


async def test_a_better_channel_later_does_not_add_a_second_send(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    cid = await make_recipient(sessions, consents={"sms": "granted"})
    async with sessions.begin() as session:
        await sends.enqueue(
            session,
            source="campaign:x",
            customer_id=cid,
            channels=["email", "sms"],
            template="t",
            payload={},
            not_before=NOW,
        )
    # Consent for email arrives; the event that caused the send is redelivered.
    async with sessions.begin() as session:
        again = await sends.enqueue(
            session,
            source="campaign:x",
            customer_id=cid,
            channels=["email", "sms"],
            template="t",
            payload={},
            not_before=NOW,
        )
    assert again is None
    assert len(await ledger(sessions)) == 1


async def test_no_reachable_channel_records_a_skip_with_the_reason(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    cid = await make_recipient(sessions, consents={"email": "revoked"})
    gone = uuid.uuid4()
    async with sessions.begin() as session:
        for customer in (cid, gone):
            await sends.enqueue(
                session,
                source="campaign:y",
                customer_id=customer,
                channels=["email", "sms"],
                template="t",
                payload={},
                not_before=NOW,
            )
    rows = {r["customer_id"]: r for r in await ledger(sessions)}
    assert (rows[cid]["status"], rows[cid]["channel"], rows[cid]["reason"]) == (
        "skipped",
        "email",
        "no-consent",
    )
    assert (rows[gone]["status"], rows[gone]["reason"]) == ("skipped", "unknown-recipient")


async def test_transactional_sends_need_an_address_not_consent(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    cid = await make_recipient(sessions, consents={})
    async with sessions.begin() as session:
        sid = await sends.enqueue(
            session,
            source="trigger:confirm:1",
            customer_id=cid,
            channels=["email"],
            template="confirm",
            payload={},
            not_before=NOW,
            marketing=False,
        )
    [row] = await ledger(sessions)
    assert (row["id"], row["status"]) == (sid, "queued")


async def test_enqueue_many_is_set_wise_and_idempotent(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    reachable = [await make_recipient(sessions) for _ in range(5)]
    silent = [await make_recipient(sessions, consents={}) for _ in range(3)]
    rows = [
        sends.EnqueueRow("campaign:z", cid, ["email"], "promo", {"n": i}, NOW, variant="A")
        for i, cid in enumerate(reachable + silent)
    ]
    async with sessions.begin() as session:
        assert await sends.enqueue_many(session, rows) == 8
    async with sessions.begin() as session:
        again = [
            sends.EnqueueRow(r.source, r.customer_id, r.channels, r.template, {}, NOW) for r in rows
        ]
        assert await sends.enqueue_many(session, again) == 0
    statuses = sorted(r["status"] for r in await ledger(sessions))
    assert statuses == ["queued"] * 5 + ["skipped"] * 3
