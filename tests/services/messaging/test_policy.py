"""The contact policy's pure rules: quiet hours across zones, reachability, caps, priority."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from services.messaging import policy

KL = ZoneInfo("Asia/Kuala_Lumpur")
BKK = ZoneInfo("Asia/Bangkok")


def test_quiet_hours_defer_to_the_morning_in_the_recipients_zone() -> None:
    # 14:30 UTC is 22:30 in Kuala Lumpur (quiet) and 21:30 in Bangkok (quiet).
    now = datetime(2026, 11, 23, 14, 30, tzinfo=UTC)
    until = policy.quiet_until(now, KL, (21, 9))
    assert until == datetime(2026, 11, 24, 9, tzinfo=KL)
    assert policy.quiet_until(now, BKK, (21, 9)) == datetime(2026, 11, 24, 9, tzinfo=BKK)
    # The same instant is 14:30 in UTC: not quiet.
    assert policy.quiet_until(now, ZoneInfo("UTC"), (21, 9)) is None


def test_quiet_hours_after_midnight_end_the_same_morning() -> None:
    now = datetime(2026, 11, 23, 19, 0, tzinfo=UTC)  # 03:00 in Kuala Lumpur
    assert policy.quiet_until(now, KL, (21, 9)) == datetime(2026, 11, 24, 9, tzinfo=KL)


def at(hour: int) -> datetime:
    return datetime(2026, 11, 23, hour, tzinfo=KL)


def test_quiet_hours_edges_and_daytime_windows() -> None:
    assert policy.quiet_until(at(9), KL, (21, 9)) is None
    assert policy.quiet_until(at(20), KL, (21, 9)) is None
    assert policy.quiet_until(at(21), KL, (21, 9)) == datetime(2026, 11, 24, 9, tzinfo=KL)
    assert policy.quiet_until(at(13), KL, (12, 14)) == at(14)
    assert policy.quiet_until(at(3), KL, (0, 0)) is None


def test_an_unknown_zone_falls_back_to_the_business_zone() -> None:
    assert policy.zone("Not/AZone", "Asia/Bangkok") == BKK
    assert policy.zone(None, "Asia/Kuala_Lumpur") == KL


def test_reachability_reasons() -> None:
    person = {
        "customer_id": uuid.uuid4(),
        "status": "active",
        "email": "a@example.my",
        "phone": None,
        "consents": {"email": "granted", "sms": "revoked"},
        "undeliverable": {},
    }
    assert policy.unreachable(person, "email", marketing=True) is None
    assert policy.unreachable(person, "sms", marketing=True) == "no-consent"
    assert policy.unreachable(person, "sms", marketing=False) == "no-address"
    assert (
        policy.unreachable({**person, "undeliverable": {"email": "550"}}, "email", marketing=True)
        == "undeliverable"
    )
    assert (
        policy.unreachable({**person, "status": "erased"}, "email", marketing=False)
        == "recipient-erased"
    )
    assert policy.unreachable(None, "email", marketing=False) == "unknown-recipient"
    assert (
        policy.unreachable({**person, "consents": {"email": "pending"}}, "email", marketing=True)
        == "no-consent"
    )


def test_frequency_caps_count_only_the_window() -> None:
    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    caps = {"email": (2, 7)}
    recent = [now - timedelta(days=1), now - timedelta(days=6)]
    assert policy.over_cap(caps, "email", recent, now)
    assert not policy.over_cap(
        caps, "email", [now - timedelta(days=8), now - timedelta(days=1)], now
    )
    assert not policy.over_cap(caps, "sms", recent, now)


def test_priority_transactional_then_triggers_then_campaigns() -> None:
    assert policy.priority("trigger:welcome:1", marketing=False) == 0
    assert policy.priority("trigger:birthday:2026", marketing=True) == 1
    assert policy.priority(f"campaign:{uuid.uuid4()}", marketing=True) == 2


def test_back_off_grows_and_is_capped() -> None:
    assert policy.retry_delay(1) == timedelta(minutes=1)
    assert policy.retry_delay(3) == timedelta(minutes=4)
    assert policy.retry_delay(30) == timedelta(hours=6)
