"""Birthday greetings: on the day in each customer's zone, once a year, leap days too."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import httpx

from services.messaging import birthdays
from shared.settings import Settings
from tests.services.messaging.test_triggers import Sessions, enable, make_recipient, sends_of


def test_leap_day_birthdays_fall_on_28_february_in_other_years() -> None:
    assert birthdays.celebrated_on(2, 29, 2028) == date(2028, 2, 29)
    assert birthdays.celebrated_on(2, 29, 2027) == date(2027, 2, 28)
    assert birthdays.is_birthday(2, 29, date(2027, 2, 28))
    assert not birthdays.is_birthday(2, 29, date(2028, 2, 28))
    assert not birthdays.is_birthday(4, 31, date(2027, 4, 30))  # a bad date is never a birthday


async def born(sessions: Sessions, month: int, day: int, zone: str | None) -> uuid.UUID:
    return await make_recipient(sessions, birth_month=month, birth_day=day, time_zone=zone)


async def test_on_the_day_in_each_customers_zone(
    client: httpx.AsyncClient, admin: dict[str, str], sessions: Sessions, settings: Settings
) -> None:
    await enable(client, admin, sessions, "birthday", offer={"kind": "discount", "percent": 10})
    kl = await born(sessions, 3, 15, "Asia/Kuala_Lumpur")
    bangkok = await born(sessions, 3, 15, "Asia/Bangkok")
    utc = await born(sessions, 3, 15, "UTC")
    other = await born(sessions, 3, 16, "Asia/Kuala_Lumpur")

    async def run(at: datetime) -> int:
        return await birthdays.send_birthdays(sessions, settings, at)

    # 16:30 UTC on 14 March: 00:30 on the 15th in Kuala Lumpur, still the 14th elsewhere.
    first = datetime(2027, 3, 14, 16, 30, tzinfo=UTC)
    assert await run(first) == 1
    [send] = await sends_of(sessions, kl)
    assert send.source == "trigger:birthday:2027"
    assert send.not_before == datetime(2027, 3, 15, 1, 0, tzinfo=UTC)  # 09:00 in KL
    assert send.payload["data"]["offer"] == {"kind": "discount", "percent": 10}
    assert send.payload["data"]["voucher_code"] == birthdays.voucher_code(settings, kl, 2027)
    assert await sends_of(sessions, bangkok) == await sends_of(sessions, utc) == []
    # An hour later it is the 15th in Bangkok; Kuala Lumpur is not greeted again.
    assert await run(first + timedelta(hours=1)) == 1
    [bkk] = await sends_of(sessions, bangkok)
    assert bkk.not_before == datetime(2027, 3, 15, 2, 0, tzinfo=UTC)  # 09:00 in Bangkok
    # Midday UTC on the 15th: the UTC customer, planned for now (09:00 has passed).
    midday = datetime(2027, 3, 15, 12, 0, tzinfo=UTC)
    assert await run(midday) == 1
    [late] = await sends_of(sessions, utc)
    assert late.not_before == midday
    assert await run(midday) == 0
    assert len(await sends_of(sessions, kl)) == 1
    assert await sends_of(sessions, other) == []
    # Next year, again once.
    assert await run(datetime(2028, 3, 15, 12, 0, tzinfo=UTC)) == 3
    assert [s.source for s in await sends_of(sessions, kl)] == [
        "trigger:birthday:2027",
        "trigger:birthday:2028",
    ]


async def test_leap_day_birthday_in_leap_and_non_leap_years(
    client: httpx.AsyncClient, admin: dict[str, str], sessions: Sessions, settings: Settings
) -> None:
    await enable(client, admin, sessions, "birthday", offer={"voucher_code": "HAPPYBDAY"})
    leapling = await born(sessions, 2, 29, "Asia/Bangkok")
    # 2027 is not a leap year: celebrated on 28 February, not on 1 March.
    assert (
        await birthdays.send_birthdays(sessions, settings, datetime(2027, 2, 27, 5, tzinfo=UTC))
        == 0
    )
    assert (
        await birthdays.send_birthdays(sessions, settings, datetime(2027, 2, 28, 5, tzinfo=UTC))
        == 1
    )
    assert (
        await birthdays.send_birthdays(sessions, settings, datetime(2027, 3, 1, 5, tzinfo=UTC)) == 0
    )
    # 2028 is: not on the 28th, on the 29th.
    assert (
        await birthdays.send_birthdays(sessions, settings, datetime(2028, 2, 28, 5, tzinfo=UTC))
        == 0
    )
    assert (
        await birthdays.send_birthdays(sessions, settings, datetime(2028, 2, 29, 5, tzinfo=UTC))
        == 1
    )
    sent = await sends_of(sessions, leapling)
    assert [s.payload["data"]["birthday"] for s in sent] == ["2027-02-28", "2028-02-29"]
    assert {s.payload["data"]["voucher_code"] for s in sent} == {"HAPPYBDAY"}


async def test_switched_off_sends_nothing(sessions: Sessions, settings: Settings) -> None:
    customer = await born(sessions, 3, 15, None)  # no zone: the business zone
    assert (
        await birthdays.send_birthdays(sessions, settings, datetime(2027, 3, 15, 3, tzinfo=UTC))
        == 0
    )
    assert await sends_of(sessions, customer) == []
