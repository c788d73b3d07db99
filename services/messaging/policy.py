"""The contact policy: one set of pure rules applied to every send, at enqueue and at send.

* No consent, no send: a marketing message needs the channel's consent `granted` in the
  projection at the moment it is sent, not only when it was queued (a customer who
  unsubscribes between the two receives nothing).
* Quiet hours are read in the recipient's zone (the business zone when theirs is unknown
  or invalid). A send that falls inside them is deferred to the end of the quiet period,
  never dropped.
* Frequency caps count marketing sends per channel over a rolling window of days.
* Priority between competing sends (documented rule): transactional messages first (they
  answer something the customer just did, and are exempt from caps and quiet hours), then
  triggers (a birthday or an expiry nudge is tied to a date), then campaigns (they can go
  tomorrow). The dispatcher processes each claimed batch in this order, so when a trigger
  and a campaign compete for a customer's last capped slot the trigger wins it.

The functions take plain values, so they are tested without a database.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MARKETING_CONSENT = "granted"

ADDRESS_FIELD: dict[str, str | None] = {
    "email": "email",
    "sms": "phone",
    "whatsapp": "phone",
    # LINE notification messages are addressed by phone number; the provider resolves it.
    "line": "phone",
    # Webhooks and push are addressed by customer id: the receiving system knows the person.
    "webhook": None,
    "push": None,
}


@functools.lru_cache(maxsize=256)
def zone(name: str | None, default: str) -> ZoneInfo:
    """The recipient's zone, or the business zone when it is missing or unknown."""
    for candidate in (name, default):
        if candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def quiet_until(now: datetime, zone: ZoneInfo, quiet_hours: tuple[int, int]) -> datetime | None:
    """When the quiet period around `now` ends in `zone`, or None outside quiet hours.

    `quiet_hours=(21, 9)` means no sends from 21:00 to 09:00 local time; equal hours
    mean no quiet hours at all. The answer is an aware datetime in `zone`, so a caller
    may store it as is.
    """
    start, end = quiet_hours
    if start == end:
        return None
    local = now.astimezone(zone)
    hour = local.hour
    quiet = (start <= hour or hour < end) if start > end else (start <= hour < end)
    if not quiet:
        return None
    day = local.date()
    if start > end and hour >= start:
        day += timedelta(days=1)
    # Built from the wall clock, so a DST change inside the night still ends at `end`:00.
    return datetime.combine(day, time(end), tzinfo=zone)


def address(recipient: Mapping[Any, Any], channel: str) -> str | None:
    """The recipient's address on `channel` (None when there is none)."""
    if channel not in ADDRESS_FIELD:
        return None
    field = ADDRESS_FIELD[channel]
    if field is None:
        return str(recipient["customer_id"])
    value = recipient.get(field)
    return str(value) if value else None


def unreachable(
    recipient: Mapping[Any, Any] | None, channel: str, *, marketing: bool
) -> str | None:
    """Why `recipient` cannot be sent to on `channel` now, or None when it can.

    The reasons are stored in the ledger's `reason` column and shown in campaign results.
    """
    if recipient is None:
        return "unknown-recipient"
    if recipient.get("status", "active") != "active":
        return f"recipient-{recipient['status']}"
    if channel not in ADDRESS_FIELD:
        return "unknown-channel"
    if marketing and (recipient.get("consents") or {}).get(channel) != MARKETING_CONSENT:
        return "no-consent"
    if address(recipient, channel) is None:
        return "no-address"
    if channel in (recipient.get("undeliverable") or {}):
        return "undeliverable"
    return None


def cap_window(caps: Mapping[str, tuple[int, int]], channel: str) -> tuple[int, timedelta] | None:
    """The (limit, window) of `channel`'s frequency cap, or None when it is uncapped."""
    cap = caps.get(channel)
    if cap is None:
        return None
    limit, days = cap
    return limit, timedelta(days=days)


def over_cap(
    caps: Mapping[str, tuple[int, int]],
    channel: str,
    sent_at: list[datetime],
    now: datetime,
) -> bool:
    """Whether one more marketing send on `channel` would exceed its cap.

    `sent_at` holds the times of the customer's earlier marketing sends on the channel
    (sent, or reserved and possibly sent); only those inside the window count.
    """
    window = cap_window(caps, channel)
    if window is None:
        return False
    limit, period = window
    since = now - period
    return sum(1 for at in sent_at if at >= since) >= limit


def priority(source: str, *, marketing: bool) -> int:
    """Lower goes first: transactional 0, triggers 1, campaigns 2 (see the module text)."""
    if not marketing:
        return 0
    return 2 if source.startswith("campaign:") else 1


def retry_delay(attempts: int) -> timedelta:
    """Back-off after a transient failure: 1, 2, 4 ... minutes, capped at six hours."""
    return timedelta(minutes=min(2 ** max(attempts - 1, 0), 360))


MAX_ATTEMPTS = 8
"""Transient failures after which a send is given up as failed (about four hours)."""
