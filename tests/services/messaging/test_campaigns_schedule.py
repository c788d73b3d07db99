"""When a campaign's message falls due, and what voucher code a recipient gets (pure)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from services.messaging.campaigns import resolved_offer, send_time, voucher_code

KL = ZoneInfo("Asia/Kuala_Lumpur")
BANGKOK = ZoneInfo("Asia/Bangkok")
NOW = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


def test_now_is_now() -> None:
    assert send_time({"kind": "now"}, BANGKOK, KL, NOW) == NOW


def test_at_is_read_in_the_business_zone_unless_it_has_an_offset() -> None:
    at = {"kind": "at", "at": "2026-12-01T10:00:00"}
    expected = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)  # 10:00 in Kuala Lumpur
    assert send_time(at, BANGKOK, KL, NOW) == expected
    assert send_time(at, KL, KL, NOW) == expected
    offset = {"kind": "at", "at": "2026-12-01T10:00:00+07:00"}
    assert send_time(offset, KL, KL, NOW) == datetime(2026, 12, 1, 3, 0, tzinfo=UTC)


def test_local_is_the_recipients_wall_clock() -> None:
    local = {"kind": "local", "at": "2026-12-01T10:00:00"}
    assert send_time(local, KL, KL, NOW) == datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
    assert send_time(local, BANGKOK, KL, NOW) == datetime(2026, 12, 1, 3, 0, tzinfo=UTC)


def test_a_time_already_past_means_now() -> None:
    assert send_time({"kind": "at", "at": "2026-01-01T10:00:00"}, KL, KL, NOW) == NOW


def test_voucher_codes_are_fixed_or_per_recipient_and_reproducible() -> None:
    campaign, alice, bob = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    assert voucher_code({"code": "SALE10"}, campaign, alice) == "SALE10"
    template = {"code_template": "XMAS-{code}"}
    mine = voucher_code(template, campaign, alice)
    assert mine.startswith("XMAS-")
    assert len(mine) == len("XMAS-") + 8
    assert mine == voucher_code(template, campaign, alice)
    assert mine != voucher_code(template, campaign, bob)
    assert mine != voucher_code(template, uuid.uuid4(), alice)


def test_the_offer_the_template_reads() -> None:
    campaign, alice = uuid.uuid4(), uuid.uuid4()
    offer = {"kind": "voucher", "code": "SALE10", "title": "10% off", "expires_at": "2026-12-31"}
    assert resolved_offer(offer, campaign, alice) == {
        "kind": "voucher",
        "voucher_code": "SALE10",
        "title": "10% off",
        "expires_at": "2026-12-31",
    }
    assert resolved_offer(None, campaign, alice) is None
    assert resolved_offer({"kind": "content", "title": "News"}, campaign, alice) == {
        "kind": "content",
        "title": "News",
    }
