"""Messaging's routing table: merges, erasure, survivors, and the hand-over to journeys."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.messaging import merging
from services.messaging.handlers import handlers
from services.messaging.models import segment_members, sends
from services.messaging.recipients import PERSONAL_FIELDS
from shared.events.contacts import (
    ConsentChanged,
    ConsentConfirmationRequested,
    CustomerErased,
    CustomerMerged,
    CustomerUpdated,
)
from shared.events.loyalty import PointsEarned
from shared.events.registry import EVENTS
from shared.events.scoring import SegmentEntered
from shared.settings import Settings
from tests.services.messaging.test_recipients import (
    T0,
    deliver,
    profile,
    row,
    scored,
    signup,
    updated,
)

Sessions = async_sessionmaker[AsyncSession]


async def add_send(
    sessions: Sessions, customer: uuid.UUID, source: str, status: str, **values: Any
) -> uuid.UUID:
    send_id = uuid.uuid4()
    async with sessions() as session, session.begin():
        await session.execute(
            insert(sends).values(
                id=send_id,
                source=source,
                customer_id=customer,
                channel=values.pop("channel", "email"),
                status=status,
                payload=values.pop("payload", {"template": "t", "data": {"name": "Aisyah"}}),
                not_before=T0,
                attempts=0,
                created_at=T0,
                **values,
            )
        )
    return send_id


async def ledger(sessions: Sessions) -> dict[uuid.UUID, Any]:
    async with sessions() as session:
        return {r.id: r for r in await session.execute(select(sends))}


def consent(customer: uuid.UUID, channel: str, status: str, at: datetime) -> ConsentChanged:
    return ConsentChanged(
        customer_id=customer,
        channel=channel,
        status=status,
        source="pos",
        changed_at=at,
    )


def test_every_consumed_type_is_registered() -> None:
    table = handlers(Settings())
    known = set(EVENTS.models())
    assert set(table) <= known
    assert CustomerMerged in table and CustomerErased in table


def merged(survivor: uuid.UUID, duplicate: uuid.UUID, at: datetime) -> CustomerMerged:
    return CustomerMerged(
        survivor_id=survivor,
        merged_id=duplicate,
        profile=profile(email="merged@example.my"),
        merged_at=at,
    )


async def test_merge_folds_the_duplicate_into_the_survivor(
    sessions: Sessions, settings: Settings
) -> None:
    survivor, duplicate, segment = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await deliver(sessions, settings, signup(survivor, at=T0 + timedelta(days=5)))
    await deliver(sessions, settings, signup(duplicate, at=T0, email="dup@example.my"))
    await deliver(sessions, settings, consent(survivor, "email", "revoked", T0))
    await deliver(sessions, settings, consent(duplicate, "email", "granted", T0 + timedelta(1)))
    await deliver(sessions, settings, consent(duplicate, "sms", "granted", T0))
    await deliver(sessions, settings, scored(duplicate, "high", T0, 55.0))
    for customer, balance in ((survivor, 100), (duplicate, 40)):
        await deliver(
            sessions,
            settings,
            PointsEarned(
                customer_id=customer,
                points=balance,
                reason="purchase",
                available_at=T0,
                balance=balance,
                earned_at=T0,
            ),
        )
    await deliver(
        sessions,
        settings,
        SegmentEntered(
            customer_id=duplicate, segment_id=segment, segment_name="VIP", entered_at=T0
        ),
    )
    sent = await add_send(sessions, duplicate, "campaign:a", "sent", sent_at=T0)
    moving = await add_send(sessions, duplicate, "campaign:b", "queued")
    clash = await add_send(sessions, duplicate, "campaign:c", "queued", channel="sms")
    kept = await add_send(sessions, survivor, "campaign:c", "queued")

    event = merged(survivor, duplicate, T0 + timedelta(days=6))
    await deliver(sessions, settings, event)
    await deliver(sessions, settings, event)  # a redelivery under a new id changes nothing

    got = await row(sessions, survivor)
    assert got.email == "merged@example.my"
    assert got.consents == {"email": "granted", "sms": "granted"}
    assert got.points_balance == 140
    assert (got.churn_band, got.clv) == ("high", 55.0)
    assert got.signed_up_at == T0
    gone = await row(sessions, duplicate)
    assert (gone.status, gone.merged_into) == ("merged", survivor)
    assert (gone.email, gone.given_name, gone.consents) == (None, None, {})

    async with sessions() as session:
        memberships = (await session.execute(select(segment_members))).all()
    assert [(m.segment_id, m.customer_id) for m in memberships] == [(segment, survivor)]

    rows = await ledger(sessions)
    assert (rows[sent].customer_id, rows[sent].status) == (duplicate, "sent")
    assert (rows[moving].customer_id, rows[moving].status) == (survivor, "queued")
    assert (rows[clash].status, rows[clash].reason) == ("cancelled", "merged")
    assert rows[kept].status == "queued"

    # Later events naming the duplicate apply to the survivor.
    await deliver(sessions, settings, consent(duplicate, "line", "granted", T0 + timedelta(7)))
    assert (await row(sessions, survivor)).consents["line"] == "granted"
    assert (await row(sessions, duplicate)).consents == {}


def test_fold_rule_keeps_a_balance_that_postdates_the_merge() -> None:
    at = T0 + timedelta(days=1)
    base: dict[str, Any] = {
        "consents": {},
        "signed_up_at": None,
        "last_purchase_at": None,
        "tier": None,
        "expiring_points": None,
        "expiring_at": None,
        "churn_band": None,
        "churn_risk": None,
        "clv": None,
        "rfm_segment": None,
    }
    survivor = base | {
        "points_balance": 140,
        "facts_at": {"points": (at + timedelta(1)).isoformat()},
    }
    duplicate = base | {"points_balance": 40, "facts_at": {"points": T0.isoformat()}}
    assert "points_balance" not in merging.folded_facts(survivor, duplicate, at)
    survivor["facts_at"] = {"points": T0.isoformat()}
    assert merging.folded_facts(survivor, duplicate, at)["points_balance"] == 180


async def test_erasure_drops_personal_data_and_cancels_queued_sends(
    sessions: Sessions, settings: Settings
) -> None:
    customer, duplicate = uuid.uuid4(), uuid.uuid4()
    await deliver(sessions, settings, signup(customer))
    await deliver(sessions, settings, signup(duplicate, email="dup@example.my"))
    await deliver(sessions, settings, consent(customer, "email", "granted", T0))
    await deliver(sessions, settings, scored(customer, "low", T0, 300.0))
    await deliver(sessions, settings, merged(customer, duplicate, T0 + timedelta(hours=1)))
    queued = await add_send(sessions, customer, "campaign:a", "queued")
    sent = await add_send(sessions, customer, "campaign:b", "sent", sent_at=T0)
    old = await add_send(sessions, duplicate, "campaign:c", "delivered", sent_at=T0)

    erased = CustomerErased(customer_id=customer, erased_at=T0 + timedelta(days=1))
    await deliver(sessions, settings, erased)
    # Late profile and consent events do not bring anything back.
    await deliver(sessions, settings, updated(customer, T0 + timedelta(days=2), locale="en"))
    await deliver(sessions, settings, consent(customer, "sms", "granted", T0 + timedelta(3)))
    await deliver(sessions, settings, erased)

    got = await row(sessions, customer)
    assert got.status == "erased"
    for field in PERSONAL_FIELDS:
        assert getattr(got, field) is None, field
    assert got.consents == {} and got.undeliverable == {}
    assert got.churn_band == "low"  # anonymous scores stay
    dup = await row(sessions, duplicate)
    assert (dup.status, dup.email) == ("merged", None)

    rows = await ledger(sessions)
    assert (rows[queued].status, rows[queued].reason) == ("cancelled", "erased")
    assert rows[sent].status == "sent"
    for send_id in (queued, sent, old):
        assert rows[send_id].payload == {"template": "t"}


async def test_erasure_of_an_unknown_customer_leaves_a_tombstone(
    sessions: Sessions, settings: Settings
) -> None:
    customer = uuid.uuid4()
    await deliver(sessions, settings, CustomerErased(customer_id=customer, erased_at=T0))
    await deliver(sessions, settings, signup(customer))
    got = await row(sessions, customer)
    assert (got.status, got.email, got.signed_up_at) == ("erased", None, T0)


async def test_double_opt_in_request_reaches_the_journeys(
    sessions: Sessions, settings: Settings
) -> None:
    customer = uuid.uuid4()
    await deliver(sessions, settings, signup(customer))
    await deliver(
        sessions,
        settings,
        ConsentConfirmationRequested(
            customer_id=customer,
            channel="email",
            address="aisyah@example.my",
            confirmation_token="tok-1",
            confirm_url="https://crm.example/confirm?t=tok-1",
            requested_at=T0,
        ),
    )
    rows = list((await ledger(sessions)).values())
    assert [(r.customer_id, r.channel, r.status) for r in rows] == [(customer, "email", "queued")]
    assert rows[0].source.startswith("trigger:confirm:email:")


async def test_profile_events_for_a_merged_customer_reach_the_survivor(
    sessions: Sessions, settings: Settings
) -> None:
    survivor, duplicate = uuid.uuid4(), uuid.uuid4()
    await deliver(sessions, settings, signup(survivor))
    await deliver(sessions, settings, merged(survivor, duplicate, T0 + timedelta(hours=1)))
    late: CustomerUpdated = updated(duplicate, T0 + timedelta(hours=2), locale="th-TH")
    await deliver(sessions, settings, late)
    assert (await row(sessions, survivor)).locale == "th-TH"
    assert (await row(sessions, duplicate)).locale is None
