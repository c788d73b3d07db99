"""The referral rules, to the second and across time zones (pure: no database)."""

from __future__ import annotations

import string
import uuid
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.referrals import rules
from services.referrals.rules import Party, Programme

KL = ZoneInfo("Asia/Kuala_Lumpur")
BANGKOK = ZoneInfo("Asia/Bangkok")
SECOND = timedelta(seconds=1)
SIGNED_UP = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
codes = st.text(alphabet=rules.CODE_ALPHABET, min_size=rules.CODE_LENGTH, max_size=8)


def programme(**overrides: Any) -> Programme:
    values: dict[str, Any] = {
        "referrer_points": 500,
        "referee_points": 200,
        "minimum_purchase_minor": 5_000,
        "currency": "MYR",
        "qualify_within_days": 30,
    }
    values.update(overrides)
    return Programme.model_validate(values)


def party(**overrides: Any) -> Party:
    return Party(customer_id=overrides.pop("customer_id", uuid.uuid4()), **overrides)


def reasons(referrer: Party, referee: Party, **overrides: Any) -> list[rules.FlagReason]:
    values: dict[str, Any] = {
        "referee_bought_before": False,
        "circular": False,
        "recent_by_referrer": 0,
        "velocity_limit": 10,
    }
    values.update(overrides)
    return rules.abuse_reasons(referrer, referee, **values)


# Qualification.


@pytest.mark.parametrize(
    ("offset", "expected"),
    [(-SECOND, "qualified"), (timedelta(0), "qualified"), (SECOND, "expired")],
)
def test_the_window_end_itself_still_counts(offset: timedelta, expected: str) -> None:
    end = SIGNED_UP + timedelta(days=30)
    assert rules.qualification(SIGNED_UP, end + offset, 5_000, "MYR", programme()) == expected


@pytest.mark.parametrize("zone", [KL, BANGKOK, UTC])
def test_purchases_in_any_zone_compare_as_instants(zone: tzinfo) -> None:
    end = SIGNED_UP + timedelta(days=30)
    local_end = end.astimezone(zone)
    assert rules.qualification(SIGNED_UP, local_end, 5_000, "MYR", programme()) == "qualified"
    late = (end + SECOND).astimezone(zone)
    assert rules.qualification(SIGNED_UP, late, 5_000, "MYR", programme()) == "expired"


def test_the_same_wall_clock_time_in_bangkok_is_an_hour_later_than_in_kuala_lumpur() -> None:
    # The window ends at 2026-12-01 17:00 in Kuala Lumpur (UTC+8) = 16:00 in Bangkok (UTC+7).
    end = SIGNED_UP + timedelta(days=30)
    wall = end.astimezone(KL).replace(tzinfo=None)
    in_kl, in_bangkok = wall.replace(tzinfo=KL), wall.replace(tzinfo=BANGKOK)
    assert rules.qualification(SIGNED_UP, in_kl, 5_000, "MYR", programme()) == "qualified"
    assert rules.qualification(SIGNED_UP, in_bangkok, 5_000, "MYR", programme()) == "expired"


def test_a_signup_stamped_in_another_zone_is_the_same_instant() -> None:
    signed_up_in_bangkok = SIGNED_UP.astimezone(BANGKOK)
    end = (SIGNED_UP + timedelta(days=30)).astimezone(KL)
    result = rules.qualification(signed_up_in_bangkok, end, 5_000, "MYR", programme())
    assert result == "qualified"
    late = rules.qualification(signed_up_in_bangkok, end + SECOND, 5_000, "MYR", programme())
    assert late == "expired"


@pytest.mark.parametrize(
    ("total", "currency", "expected"),
    [
        (5_000, "MYR", "qualified"),
        (4_999, "MYR", "unqualified"),
        (50_000, "MYR", "qualified"),
        (5_000, "THB", "unqualified"),
        (500_000, "THB", "unqualified"),
    ],
)
def test_the_minimum_is_reached_exactly_in_the_programme_currency(
    total: int, currency: str, expected: str
) -> None:
    moment = SIGNED_UP + timedelta(days=3)
    assert rules.qualification(SIGNED_UP, moment, total, currency, programme()) == expected


def test_a_late_purchase_is_expired_even_below_the_minimum() -> None:
    late = SIGNED_UP + timedelta(days=31)
    assert rules.qualification(SIGNED_UP, late, 1, "MYR", programme()) == "expired"


def test_a_programme_in_baht_qualifies_baht_purchases() -> None:
    baht = programme(currency="THB", minimum_purchase_minor=100_000)
    moment = SIGNED_UP + timedelta(days=1)
    assert rules.qualification(SIGNED_UP, moment, 100_000, "THB", baht) == "qualified"
    assert rules.qualification(SIGNED_UP, moment, 100_000, "MYR", baht) == "unqualified"


# Refunds.

PURCHASED = datetime(2026, 11, 10, 12, 0, tzinfo=KL)
RETURN_WINDOW = timedelta(days=14)


@pytest.mark.parametrize(
    ("offset", "expected"),
    [(-SECOND, True), (timedelta(0), True), (SECOND, False)],
)
def test_only_a_refund_inside_the_return_window_cancels(offset: timedelta, expected: bool) -> None:
    refunded = (PURCHASED + RETURN_WINDOW + offset).astimezone(BANGKOK)
    assert rules.refund_cancels(PURCHASED, refunded, 0, 5_000, RETURN_WINDOW) is expected


@pytest.mark.parametrize(("kept", "expected"), [(5_000, False), (4_999, True), (0, True)])
def test_a_refund_cancels_only_when_the_kept_amount_falls_below_the_minimum(
    kept: int, expected: bool
) -> None:
    refunded = PURCHASED + timedelta(days=2)
    assert rules.refund_cancels(PURCHASED, refunded, kept, 5_000, RETURN_WINDOW) is expected


def test_with_no_return_window_only_a_refund_at_the_same_instant_cancels() -> None:
    assert rules.refund_cancels(PURCHASED, PURCHASED, 0, 5_000, timedelta(0))
    assert not rules.refund_cancels(PURCHASED, PURCHASED + SECOND, 0, 5_000, timedelta(0))


# Abuse guards.


def test_a_clean_pair_has_no_reasons() -> None:
    referrer = party(
        email_key=rules.email_key("aisyah@example.com"),
        phone_key=rules.phone_key("+60123456789"),
        fingerprints=frozenset({("device", "d-1"), ("payment", "card-1")}),
    )
    referee = party(
        email_key=rules.email_key("somchai@example.com"),
        phone_key=rules.phone_key("+66812345678"),
        fingerprints=frozenset({("device", "d-2"), ("payment", "card-2")}),
    )
    assert reasons(referrer, referee) == []


def test_parties_without_identifiers_are_not_the_same_person() -> None:
    assert reasons(party(), party()) == []


def test_the_same_customer_is_a_self_referral() -> None:
    same = uuid.uuid4()
    assert reasons(party(customer_id=same), party(customer_id=same)) == ["self_referral"]


@pytest.mark.parametrize(
    ("referrer_email", "referee_email"),
    [
        ("aisyah@example.com", "AISYAH@Example.COM"),
        ("aisyah@example.com", "aisyah+friend@example.com"),
        ("aisyah.rahman@gmail.com", "AisyahRahman@gmail.com"),
        ("a.i.s.y.a.h+promo@googlemail.com", "aisyah@gmail.com"),
        (" aisyah@example.com ", "aisyah+x+y@example.com"),
    ],
)
def test_the_same_mailbox_is_a_self_referral(referrer_email: str, referee_email: str) -> None:
    referrer = party(email_key=rules.email_key(referrer_email))
    referee = party(email_key=rules.email_key(referee_email))
    assert reasons(referrer, referee) == ["self_referral"]


def test_dots_count_outside_gmail() -> None:
    assert rules.email_key("aisyah.rahman@example.com") != rules.email_key(
        "aisyahrahman@example.com"
    )
    assert rules.email_key("a.b@gmail.com") == rules.email_key("ab@gmail.com") == "ab@gmail.com"


@pytest.mark.parametrize("email", [None, "", "no-at-sign", "+tag@example.com"])
def test_an_address_without_a_mailbox_has_no_key(email: str | None) -> None:
    assert rules.email_key(email) is None


@pytest.mark.parametrize(
    ("referrer_phone", "referee_phone"),
    [
        ("+60123456789", "+60 12-345 6789"),
        ("+66 81 234 5678", "(+66) 812345678"),
    ],
)
def test_the_same_phone_however_written_is_a_self_referral(
    referrer_phone: str, referee_phone: str
) -> None:
    referrer = party(phone_key=rules.phone_key(referrer_phone))
    referee = party(phone_key=rules.phone_key(referee_phone))
    assert reasons(referrer, referee) == ["self_referral"]


@pytest.mark.parametrize("phone", [None, "", "call me", " - "])
def test_a_phone_without_digits_has_no_key(phone: str | None) -> None:
    assert rules.phone_key(phone) is None


def test_a_shared_fingerprint_is_a_self_referral() -> None:
    referrer = party(fingerprints=frozenset({("device", "d-1"), ("payment", "card-1")}))
    referee = party(fingerprints=frozenset({("device", "d-9"), ("payment", "card-1")}))
    assert reasons(referrer, referee) == ["self_referral"]


def test_the_same_value_under_another_kind_is_not_shared() -> None:
    referrer = party(fingerprints=frozenset({("device", "x-1")}))
    referee = party(fingerprints=frozenset({("payment", "x-1")}))
    assert reasons(referrer, referee) == []


def test_a_referee_who_bought_before_is_flagged() -> None:
    assert reasons(party(), party(), referee_bought_before=True) == ["bought_before"]


def test_a_circular_referral_is_flagged() -> None:
    assert reasons(party(), party(), circular=True) == ["circular"]


@pytest.mark.parametrize(("recent", "flagged"), [(0, False), (9, False), (10, True), (50, True)])
def test_more_referrals_than_the_velocity_limit_are_a_burst(recent: int, flagged: bool) -> None:
    # With a limit of 10, the 10th referral in the window passes and the 11th is held.
    found = reasons(party(), party(), recent_by_referrer=recent, velocity_limit=10)
    assert found == (["velocity"] if flagged else [])


def test_every_reason_is_reported_at_once_in_a_stable_order() -> None:
    same = uuid.uuid4()
    found = reasons(
        party(customer_id=same),
        party(customer_id=same),
        referee_bought_before=True,
        circular=True,
        recent_by_referrer=1,
        velocity_limit=1,
    )
    assert found == ["self_referral", "bought_before", "circular", "velocity"]


def test_is_circular_looks_up_the_whole_chain_above_the_referrer() -> None:
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    assert rules.is_circular(a, [b, a])
    assert rules.is_circular(a, {a})
    assert not rules.is_circular(c, [b, a])
    assert not rules.is_circular(a, [])


# Months, caps and late attribution.


def test_month_bounds_follow_the_business_zone_across_a_month_boundary() -> None:
    moment = datetime(2026, 11, 30, 16, 30, tzinfo=UTC)  # 2026-12-01 00:30 in Kuala Lumpur
    start, end = rules.month_bounds(moment, "Asia/Kuala_Lumpur")
    assert start == datetime(2026, 12, 1, tzinfo=KL) == datetime(2026, 11, 30, 16, tzinfo=UTC)
    assert end == datetime(2027, 1, 1, tzinfo=KL) == datetime(2026, 12, 31, 16, tzinfo=UTC)
    assert start <= moment < end


def test_the_same_instant_is_still_november_in_utc_and_bangkok_an_hour_earlier() -> None:
    moment = datetime(2026, 11, 30, 16, 30, tzinfo=UTC)
    start, end = rules.month_bounds(moment, "UTC")
    assert (start, end) == (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
    before = datetime(2026, 11, 30, 16, 59, 59, tzinfo=UTC)  # 23:59:59 in Bangkok
    start, _ = rules.month_bounds(before, "Asia/Bangkok")
    assert start == datetime(2026, 11, 1, tzinfo=BANGKOK)
    start, _ = rules.month_bounds(before + SECOND, "Asia/Bangkok")
    assert start == datetime(2026, 12, 1, tzinfo=BANGKOK)


@pytest.mark.parametrize(
    ("moment", "start", "end"),
    [
        (datetime(2028, 2, 29, 15, 59, tzinfo=UTC), (2028, 2, 1), (2028, 3, 1)),
        (datetime(2028, 1, 31, 16, 0, tzinfo=UTC), (2028, 2, 1), (2028, 3, 1)),
        (datetime(2026, 12, 31, 16, 0, tzinfo=UTC), (2027, 1, 1), (2027, 2, 1)),
        (datetime(2026, 12, 31, 15, 59, 59, tzinfo=UTC), (2026, 12, 1), (2027, 1, 1)),
    ],
)
def test_month_bounds_in_february_and_at_the_year_end(
    moment: datetime, start: tuple[int, int, int], end: tuple[int, int, int]
) -> None:
    found = rules.month_bounds(moment, "Asia/Kuala_Lumpur")
    assert found == (datetime(*start, tzinfo=KL), datetime(*end, tzinfo=KL))


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)))
def test_every_instant_falls_in_its_own_month(naive: datetime) -> None:
    moment = naive.replace(tzinfo=UTC)
    start, end = rules.month_bounds(moment, "Asia/Kuala_Lumpur")
    assert start <= moment < end
    assert start.day == end.day == 1
    assert start.hour == start.minute == start.second == start.microsecond == 0
    assert 28 <= (end - start).days <= 31


@pytest.mark.parametrize(
    ("rewarded", "cap", "allowed"),
    [(0, None, True), (1_000, None, True), (0, 0, False), (2, 3, True), (3, 3, False)],
)
def test_within_cap(rewarded: int, cap: int | None, allowed: bool) -> None:
    assert rules.within_cap(rewarded, cap) is allowed


@pytest.mark.parametrize(
    ("offset", "allowed"), [(-SECOND, True), (timedelta(0), True), (SECOND, False)]
)
def test_late_attribution_counts_until_the_window_end(offset: timedelta, allowed: bool) -> None:
    window = timedelta(days=14)
    at = (SIGNED_UP + window + offset).astimezone(BANGKOK)
    assert rules.late_attribution_allowed(SIGNED_UP, at, window) is allowed


def test_late_attribution_without_a_known_signup_is_allowed() -> None:
    assert rules.late_attribution_allowed(None, SIGNED_UP, timedelta(0))


# Rewards.


def test_reward_points_without_a_tier_override() -> None:
    plain = programme(referrer_points_by_tier={"gold": 900})
    assert rules.reward_points(plain, None) == (500, 200)
    assert rules.reward_points(plain, "silver") == (500, 200)


def test_reward_points_with_a_tier_override() -> None:
    tiered = programme(referrer_points_by_tier={"gold": 900, "silver": 0})
    assert rules.reward_points(tiered, "gold") == (900, 200)
    assert rules.reward_points(tiered, "silver") == (0, 200)


def test_reward_points_are_case_sensitive_tier_names() -> None:
    tiered = programme(referrer_points_by_tier={"gold": 900})
    assert rules.reward_points(tiered, "Gold") == (500, 200)


# Programme validation.


def test_a_programme_that_rewards_nobody_is_refused() -> None:
    with pytest.raises(ValidationError, match="at least one side"):
        programme(referrer_points=0, referee_points=0)


def test_a_programme_whose_tier_points_are_all_zero_rewards_nobody() -> None:
    with pytest.raises(ValidationError, match="at least one side"):
        programme(referrer_points=0, referee_points=0, referrer_points_by_tier={"gold": 0})


@pytest.mark.parametrize(
    "overrides",
    [
        {"referrer_points": 0, "referee_points": 100},
        {"referrer_points": 100, "referee_points": 0},
        {"referrer_points": 0, "referee_points": 0, "referrer_points_by_tier": {"gold": 1}},
    ],
)
def test_a_one_sided_programme_is_accepted(overrides: dict[str, Any]) -> None:
    assert programme(**overrides)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"referrer_points": -1}, "referrer_points"),
        ({"referee_points": -5}, "referee_points"),
        ({"referrer_points_by_tier": {"gold": -1}}, "referrer_points_by_tier"),
        ({"referrer_points_by_tier": {"gold": 1_000_001}}, "referrer_points_by_tier"),
        ({"minimum_purchase_minor": -1}, "minimum_purchase_minor"),
        ({"qualify_within_days": 0}, "qualify_within_days"),
        ({"monthly_cap": -1}, "monthly_cap"),
        ({"currency": "myr"}, "currency"),
        ({"bonus": 5}, "bonus"),
    ],
)
def test_invalid_programmes_name_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as raised:
        programme(**overrides)
    assert field in {str(error["loc"][0]) for error in raised.value.errors()}


def test_a_programme_defaults_to_ringgit_and_no_cap() -> None:
    plain = Programme.model_validate(
        {
            "referrer_points": 1,
            "referee_points": 1,
            "minimum_purchase_minor": 0,
            "qualify_within_days": 1,
        }
    )
    assert (plain.currency, plain.monthly_cap, plain.referrer_points_by_tier) == ("MYR", None, {})


# Codes.


def test_new_codes_use_the_alphabet_and_length() -> None:
    made = {rules.new_code() for _ in range(500)}
    assert len(made) == 500
    for code in made:
        assert len(code) == rules.CODE_LENGTH == 8
        assert set(code) <= set(rules.CODE_ALPHABET)


def test_the_alphabet_has_no_look_alikes() -> None:
    assert not set("01OIL") & set(rules.CODE_ALPHABET)
    assert len(set(rules.CODE_ALPHABET)) == len(rules.CODE_ALPHABET) == 31


@pytest.mark.parametrize(
    "typed",
    ["ABCD-EFGH", "abcd-efgh", "abcdefgh", " abcd efgh ", "AbCd_EfGh", "ab.cd-ef gh", "ABCD\tEFGH"],
)
def test_normalise_code_ignores_case_dashes_and_spaces(typed: str) -> None:
    assert rules.normalise_code(typed) == "ABCDEFGH"


@pytest.mark.parametrize(
    "typed",
    [
        "",
        "ABCDEFG",
        "ABCDEFGHJ",
        "ABCD-EFG0",
        "ABCD-EFGO",
        "ABCD-EFG1",
        "ABCD-EFGI",
        "ABCD-EFGL",
        "abcd-efgl",
        "ABCD/EFGH",
        "ABCD-EFGÉ",
        "ABCD-EFG٣",
        "ABCDEFß",  # upper-cases to ...SS, which would otherwise pass
    ],
)
def test_malformed_codes_and_look_alikes_are_rejected(typed: str) -> None:
    assert rules.normalise_code(typed) is None


def test_display_code_splits_in_two_halves() -> None:
    assert rules.display_code("ABCDEFGH") == "ABCD-EFGH"


@given(codes)
def test_a_displayed_code_normalises_back(code: str) -> None:
    assert rules.normalise_code(rules.display_code(code)) == code
    assert rules.normalise_code(rules.display_code(code).lower()) == code


@given(codes, st.lists(st.sampled_from([" ", "-", "_", ".", "\t"]), max_size=4), st.data())
def test_noise_anywhere_is_ignored(code: str, noise: list[str], data: st.DataObject) -> None:
    typed = list(code)
    for char in noise:
        typed.insert(data.draw(st.integers(0, len(typed))), char)
    assert rules.normalise_code("".join(typed)) == code


@given(st.text(alphabet=string.ascii_letters + string.digits + " -", max_size=12))
def test_whatever_normalises_is_a_valid_code(typed: str) -> None:
    code = rules.normalise_code(typed)
    if code is not None:
        assert len(code) == rules.CODE_LENGTH
        assert set(code) <= set(rules.CODE_ALPHABET)
