"""The birthday journey: a scheduled job that greets customers on the day, in their zone.

* "The day" is the calendar date in the customer's own time zone (the projection's
  `time_zone`, else the business zone), so a customer in Bangkok and one in Kuala Lumpur
  born on the same day are greeted on their own midnight-to-midnight.
* Leap-day birthdays (29 February) are celebrated on 28 February in non-leap years: still
  in February, and before the day that never comes rather than after it.
* Once a year: the ledger source is `trigger:birthday:<local year>`, so hourly runs, a
  second worker or a crash and restart queue the greeting once.
* At a sensible hour: the send is queued for `options.hour` (default 09:00) local time on
  the day; a run later in the day queues it for now. The dispatcher's quiet hours still
  apply on top.
* A voucher: the trigger's offer may name a fixed `voucher_code`; otherwise each greeting
  carries its own code, derived from the customer and year with the deployment's signing
  key (`voucher_code`), so the same code comes out on every run and cannot be guessed.

The job runs hourly and works from the database's state, so it is safe to run again.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import uuid
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog
from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.messaging import sends, triggers
from services.messaging.models import recipients
from shared.auth import key_ring
from shared.jobs import ScheduledJob
from shared.settings import Settings

log = structlog.get_logger(__name__)

BATCH = 1000
VOUCHER_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
"""No 0/O, 1/I/L: codes are read aloud at the till."""


def celebrated_on(month: int, day: int, year: int) -> date:
    """The date a birthday is celebrated in `year` (29 Feb -> 28 Feb in non-leap years)."""
    if month == 2 and day == 29 and not calendar.isleap(year):
        return date(year, 2, 28)
    return date(year, month, day)


def zone_of(name: str | None, default: str) -> ZoneInfo:
    """The customer's zone; the business zone when it is missing or unknown."""
    try:
        return ZoneInfo(name or default)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(default)


def is_birthday(month: int, day: int, local_today: date) -> bool:
    """Whether `local_today` is the day a (month, day) birthday is celebrated."""
    try:
        return celebrated_on(month, day, local_today.year) == local_today
    except ValueError:  # 31 April and the like: a bad date in the profile, never a birthday
        return False


def send_at(local_today: date, zone: ZoneInfo, hour: int, now: datetime) -> datetime:
    """When to send today's greeting: at `hour` local time, or now if that has passed."""
    planned = datetime.combine(local_today, time(hour), tzinfo=zone).astimezone(UTC)
    return max(planned, now)


def voucher_code(settings: Settings, customer_id: uuid.UUID, year: int) -> str:
    """A code unique to the customer's birthday of `year`, reproducible from the key."""
    key = key_ring(settings).signing_secret.encode()
    digest = hmac.new(key, f"birthday:{customer_id}:{year}".encode(), hashlib.sha256).digest()
    number = int.from_bytes(digest[:8], "big")
    chars = []
    for _ in range(8):
        number, index = divmod(number, len(VOUCHER_ALPHABET))
        chars.append(VOUCHER_ALPHABET[index])
    return "BD" + "".join(chars)


def _candidate_days(now: datetime) -> set[tuple[int, int]]:
    # Every zone's local date is within a day of UTC's; 29 Feb joins when 28 Feb is near.
    days = {(d.month, d.day) for d in (now.date() + timedelta(days=n) for n in (-1, 0, 1))}
    if (2, 28) in days:
        days.add((2, 29))
    return days


async def _candidates(
    session: AsyncSession, days: Iterable[tuple[int, int]], after: uuid.UUID | None
) -> list[Any]:
    statement = (
        select(
            recipients.c.customer_id,
            recipients.c.time_zone,
            recipients.c.birth_month,
            recipients.c.birth_day,
        )
        .where(
            recipients.c.status == "active",
            tuple_(recipients.c.birth_month, recipients.c.birth_day).in_(list(days)),
        )
        .order_by(recipients.c.customer_id)
        .limit(BATCH)
    )
    if after is not None:
        statement = statement.where(recipients.c.customer_id > after)
    return list((await session.execute(statement)).all())


async def send_birthdays(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, now: datetime
) -> int:
    """Queue today's birthday greetings (each customer's today); the number queued."""
    async with sessions() as session:
        trigger = await triggers.load(session, "birthday")
    if not trigger.enabled:
        return 0
    hour = int(trigger.options.get("hour", 9))
    offer = dict(trigger.offer or {})
    queued = 0
    after: uuid.UUID | None = None
    days = _candidate_days(now)
    while True:
        async with sessions() as session, session.begin():
            batch = await _candidates(session, days, after)
            if not batch:
                break
            after = batch[-1].customer_id
            for row in batch:
                zone = zone_of(row.time_zone, settings.messaging_time_zone)
                today = now.astimezone(zone).date()
                if not is_birthday(row.birth_month, row.birth_day, today):
                    continue
                code = offer.get("voucher_code") or voucher_code(
                    settings, row.customer_id, today.year
                )
                send_id = await sends.enqueue(
                    session,
                    source=f"trigger:birthday:{today.year}",
                    customer_id=row.customer_id,
                    channels=trigger.channels,
                    template=trigger.template,
                    payload={"offer": offer, "voucher_code": code, "birthday": today.isoformat()},
                    not_before=send_at(today, zone, hour, now),
                )
                queued += send_id is not None
    if queued:
        log.info("messaging.birthday.queued", queued=queued)
    return queued


async def run(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> int:
    """The scheduled job's entry point."""
    return await send_birthdays(sessions, settings, datetime.now(UTC))


JOB: ScheduledJob = ScheduledJob("birthday-greetings", 3600, run)
"""Hourly: each zone's midnight falls on a different UTC hour."""


__all__ = ["JOB", "celebrated_on", "is_birthday", "send_birthdays", "voucher_code"]
