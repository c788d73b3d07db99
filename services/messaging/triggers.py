"""Always-on journeys: messages that events start (welcome, tier up, expiring points...).

`on_event` is called by the messaging consumer (`handlers.py`) after the recipients
projection took the event in, inside the same transaction. It picks the journey for the
event type and queues a send through `sends.enqueue`, never by writing the ledger itself.

Exactly once: every journey derives its ledger `source` from the event's own fields
(`trigger:welcome`, `trigger:tier:gold:2027`, `trigger:expiring:2027-03-31`...), never from
the clock, so a redelivered event maps to the same ledger key and `enqueue` ignores it.

Each journey is configured by a row of the `triggers` table (switched on or off, a delay
before sending, a template, an offer and options); a journey without a row uses the
defaults below and is off, so a fresh install sends nothing the business did not ask for.
The double opt-in confirmation is not a journey: contacts asked for it, the customer is
waiting for it, and it is sent at once, always, as a transactional message.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.messaging import sends
from services.messaging import surveys as survey_links
from services.messaging.models import recipients, triggers
from services.messaging.models import sends as sends_table
from shared.events.contacts import ConsentChanged, ConsentConfirmationRequested, CustomerSignedUp
from shared.events.envelope import Event
from shared.events.loyalty import PointsExpiring, TierChanged
from shared.events.purchases import PurchaseCompleted
from shared.events.referrals import ReferralRewarded
from shared.events.scoring import CustomerScored
from shared.settings import Settings

log = structlog.get_logger(__name__)

DEFAULT_CHANNELS: tuple[str, ...] = ("email", "whatsapp", "line", "sms")
"""Cheapest first: SMS costs money per message, so it is the last resort."""
CONFIRMATION_TEMPLATE = "consent_confirmation"


@dataclass(frozen=True)
class Journey:
    """A journey's name and its defaults (used until an admin saves a row for it)."""

    name: str
    description: str
    delay_seconds: int = 0
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def template(self) -> str:
        return self.name


JOURNEYS: dict[str, Journey] = {
    journey.name: journey
    for journey in (
        Journey(
            "welcome",
            "After signup, once the customer can be reached (first consent within the window).",
            options={"window_days": 30},
        ),
        Journey(
            "birthday",
            "On the day in the customer's zone, with a voucher; once a year.",
            options={"hour": 9},
        ),
        Journey(
            "points_expiring",
            "Before points expire (loyalty's points.expiring).",
            options={"min_points": 1},
        ),
        Journey("tier_upgraded", "When a member moves up a tier; once per tier and year."),
        Journey("referral_rewarded", "When a referral earned the customer points."),
        Journey(
            "win_back",
            "When churn risk crosses into one of `bands`; at most once per `cooldown_days`.",
            options={"bands": ["high"], "cooldown_days": 90},
        ),
        Journey(
            "post_purchase_survey",
            "A survey link (`survey_id`) after a purchase; at most once per `cooldown_days`.",
            delay_seconds=24 * 3600,
            options={"survey_id": None, "cooldown_days": 90},
        ),
    )
}


@dataclass(frozen=True)
class Trigger:
    """A journey's configuration as it stands: the saved row, else the defaults."""

    name: str
    enabled: bool
    delay_seconds: int
    template: str
    offer: dict[str, Any] | None
    options: dict[str, Any]
    updated_at: datetime | None = None

    @property
    def channels(self) -> list[str]:
        return list(self.options.get("channels") or DEFAULT_CHANNELS)


def _defaults(journey: Journey) -> Trigger:
    return Trigger(
        journey.name, False, journey.delay_seconds, journey.template, None, dict(journey.options)
    )


def _from_row(journey: Journey, row: Row[Any]) -> Trigger:
    return Trigger(
        name=journey.name,
        enabled=bool(row.enabled),
        delay_seconds=int(row.delay_seconds),
        template=row.template or journey.template,
        offer=row.offer,
        options=dict(journey.options) | dict(row.options or {}),
        updated_at=row.updated_at,
    )


async def load(session: AsyncSession, name: str) -> Trigger:
    """One journey's configuration (KeyError for a name that is not a journey)."""
    journey = JOURNEYS[name]
    row = (await session.execute(select(triggers).where(triggers.c.name == name))).one_or_none()
    return _defaults(journey) if row is None else _from_row(journey, row)


async def load_all(session: AsyncSession) -> list[Trigger]:
    """Every journey's configuration, in catalogue order."""
    rows = {row.name: row for row in await session.execute(select(triggers))}
    return [
        _from_row(journey, rows[name]) if name in rows else _defaults(journey)
        for name, journey in JOURNEYS.items()
    ]


async def on_event(
    session: AsyncSession, event: Event, *, now: datetime, settings: Settings
) -> None:
    """Queue what `event` starts, if anything (called after the projection took it in)."""
    match event:
        case ConsentConfirmationRequested():
            await _confirmation(session, event, now, settings)
        case CustomerSignedUp():
            await _welcome(session, event.customer_id, now)
        case ConsentChanged(status="granted"):
            await _welcome(session, event.customer_id, now)
        case TierChanged(direction="up", tier=str(tier)):
            year = _local(event.changed_at, settings).year
            await _journey(
                session,
                "tier_upgraded",
                event.customer_id,
                f"tier:{tier}:{year}",
                {"tier": tier, "previous_tier": event.previous_tier},
                now,
            )
        case PointsExpiring():
            await _expiring(session, event, now, settings)
        case ReferralRewarded():
            await _journey(
                session,
                "referral_rewarded",
                event.customer_id,
                f"referral:{event.reward_id}",
                {"points": event.points, "role": event.role},
                now,
            )
        case CustomerScored():
            await _win_back(session, event, now)
        case PurchaseCompleted():
            await _post_purchase_survey(session, event, now, settings)
        case _:
            return


async def _recipient(session: AsyncSession, customer_id: uuid.UUID) -> Row[Any] | None:
    """The active recipient; None for unknown, merged or erased customers."""
    row = (
        await session.execute(select(recipients).where(recipients.c.customer_id == customer_id))
    ).one_or_none()
    return row if row is not None and row.status == "active" else None


async def _journey(
    session: AsyncSession,
    name: str,
    customer_id: uuid.UUID,
    occurrence: str,
    payload: dict[str, Any],
    now: datetime,
    trigger: Trigger | None = None,
) -> uuid.UUID | None:
    """Queue one occurrence of a journey if it is on; the new send's id or None."""
    trigger = trigger or await load(session, name)
    if not trigger.enabled or await _recipient(session, customer_id) is None:
        return None
    if trigger.offer:
        payload = {"offer": trigger.offer} | payload
    send_id = await sends.enqueue(
        session,
        source=f"trigger:{occurrence}",
        customer_id=customer_id,
        channels=trigger.channels,
        template=trigger.template,
        payload=payload,
        not_before=now + timedelta(seconds=trigger.delay_seconds),
    )
    if send_id is not None:
        log.info("messaging.trigger.queued", trigger=name, customer_id=str(customer_id))
    return send_id


async def _confirmation(
    session: AsyncSession, event: ConsentConfirmationRequested, now: datetime, settings: Settings
) -> None:
    # One send per confirmation request: a new request carries a new token (a new link),
    # a redelivered one the same token, hence the same ledger key.
    digest = hashlib.sha256(event.confirmation_token.encode()).hexdigest()[:16]
    url = event.confirm_url or (
        f"{settings.public_base_url.rstrip('/')}/v1/contacts/consents/confirm"
        f"?token={event.confirmation_token}"
    )
    await sends.enqueue(
        session,
        source=f"trigger:confirm:{event.channel}:{digest}",
        customer_id=event.customer_id,
        channels=[event.channel],
        template=CONFIRMATION_TEMPLATE,
        payload={"confirm_url": url, "address": event.address, "channel": event.channel},
        not_before=now,
        marketing=False,
    )


async def _welcome(session: AsyncSession, customer_id: uuid.UUID, now: datetime) -> None:
    # Consents usually arrive after the signup event, so welcoming at signup alone would
    # mostly record "no consent". The welcome goes out at the first moment within the window
    # that a channel is granted, once (one ledger key per customer).
    trigger = await load(session, "welcome")
    recipient = await _recipient(session, customer_id)
    if not trigger.enabled or recipient is None:
        return
    granted = {ch for ch, status in (recipient.consents or {}).items() if status == "granted"}
    if not granted & set(trigger.channels):
        return
    signed_up = recipient.signed_up_at
    window = timedelta(days=int(trigger.options.get("window_days") or 30))
    if signed_up is not None and now - signed_up > window:
        return
    if await _already(session, customer_id, "trigger:welcome"):
        return
    await _journey(session, "welcome", customer_id, "welcome", {}, now, trigger)


async def _expiring(
    session: AsyncSession, event: PointsExpiring, now: datetime, settings: Settings
) -> None:
    trigger = await load(session, "points_expiring")
    if event.points < int(trigger.options.get("min_points") or 1):
        return
    day = _local(event.expires_at, settings).date()
    payload = {"points": event.points, "expires_at": event.expires_at.isoformat()}
    await _journey(
        session, "points_expiring", event.customer_id, f"expiring:{day}", payload, now, trigger
    )


async def _win_back(session: AsyncSession, event: CustomerScored, now: datetime) -> None:
    trigger = await load(session, "win_back")
    bands = set(trigger.options.get("bands") or ["high"])
    if event.churn_band not in bands or event.previous_churn_band in bands:
        return  # only a crossing into the band starts the journey, not staying in it
    cooldown = timedelta(days=int(trigger.options.get("cooldown_days") or 0))
    if await _already(session, event.customer_id, "trigger:win_back:%", since=now - cooldown):
        return
    payload = {"churn_band": event.churn_band, "churn_risk": event.churn_risk}
    occurrence = f"win_back:{event.scored_at.date()}"
    await _journey(session, "win_back", event.customer_id, occurrence, payload, now, trigger)


async def _post_purchase_survey(
    session: AsyncSession, event: PurchaseCompleted, now: datetime, settings: Settings
) -> None:
    trigger = await load(session, "post_purchase_survey")
    raw_survey = trigger.options.get("survey_id")
    if not trigger.enabled or raw_survey is None:
        return
    survey_id = uuid.UUID(str(raw_survey))
    cooldown = timedelta(days=int(trigger.options.get("cooldown_days") or 0))
    if await _already(session, event.customer_id, "trigger:survey:%", since=now - cooldown):
        return
    payload = {"survey_id": str(survey_id), "purchase_id": str(event.purchase_id)}
    occurrence = f"survey:{event.purchase_id}"
    send_id = await _journey(
        session, "post_purchase_survey", event.customer_id, occurrence, payload, now, trigger
    )
    if send_id is not None:
        # The link is signed over the send's id, which exists only now.
        await survey_links.attach_link(session, settings, survey_id, event.customer_id, send_id)


async def _already(
    session: AsyncSession,
    customer_id: uuid.UUID,
    source: str,
    *,
    since: datetime | None = None,
) -> bool:
    """Whether the customer has a live (not skipped) ledger row for `source` (a LIKE pattern)."""
    statement = select(sends_table.c.id).where(
        sends_table.c.customer_id == customer_id,
        sends_table.c.source.like(source),
        sends_table.c.status.notin_(_NOT_SENT),
    )
    if since is not None:
        # By the planned time, which follows the events' clock (`now`), not the wall clock.
        statement = statement.where(sends_table.c.not_before >= since)
    return (await session.execute(statement.limit(1))).first() is not None


_NOT_SENT: Sequence[str] = ("skipped", "cancelled")


def _local(moment: datetime, settings: Settings) -> datetime:
    return moment.astimezone(ZoneInfo(settings.messaging_time_zone))
