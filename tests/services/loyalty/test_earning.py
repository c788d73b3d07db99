"""Earning rules: rates, multipliers, promotions, tiers, caps and rounding."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.loyalty.earning import (
    EarningRules,
    Line,
    Promotion,
    PurchaseFacts,
    points_for,
    refund_share,
)

# 2026-11-23 is a Monday; 10:00 UTC is 18:00 in Kuala Lumpur.
MONDAY_EVENING = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
RULES = EarningRules(base_rates={"MYR": Decimal(1), "THB": Decimal("0.04")})


def purchase(total: int, lines: list[Line] | None = None, **extra: object) -> PurchaseFacts:
    return PurchaseFacts(
        currency=str(extra.get("currency", "MYR")),
        total_minor=total,
        lines=lines or [],
        purchased_at=extra.get("at", MONDAY_EVENING),  # type: ignore[arg-type]
        store_id=extra.get("store"),  # type: ignore[arg-type]
    )


def test_base_rate_floors_fractions() -> None:
    assert points_for(purchase(1250), RULES) == 12  # RM12.50 at 1 point per RM1
    assert points_for(purchase(1250), RULES.model_copy(update={"rounding": "nearest"})) == 13
    assert points_for(purchase(1201), RULES.model_copy(update={"rounding": "ceiling"})) == 13


def test_other_currency_rate_and_unknown_currency() -> None:
    assert points_for(purchase(100_000, currency="THB"), RULES) == 40  # 1,000 baht
    assert points_for(purchase(100_000, currency="SGD"), RULES) == 0


def test_sku_beats_category_multiplier() -> None:
    rules = RULES.model_copy(
        update={
            "category_multipliers": {"coffee": Decimal(2)},
            "sku_multipliers": {"LATTE": Decimal(3)},
        }
    )
    lines = [
        Line(sku="LATTE", category="coffee", quantity=1, unit_price_minor=1000),
        Line(sku="MOCHA", category="coffee", quantity=2, unit_price_minor=500),
        Line(sku="CAKE", category="food", quantity=1, unit_price_minor=1000),
    ]
    assert points_for(purchase(3000, lines), rules) == 30 + 20 + 10


def test_promotion_applies_only_in_its_window_store_and_weekday() -> None:
    promo = Promotion(
        name="Double Monday evenings",
        multiplier=Decimal(2),
        starts_on=date(2026, 11, 1),
        ends_on=date(2026, 11, 30),
        weekdays=[1],
        from_time=time(17, 0),
        until_time=time(21, 0),
        stores=["kl-01"],
    )
    rules = RULES.model_copy(update={"promotions": [promo]})
    assert points_for(purchase(1000, store="kl-01"), rules) == 10, "no lines: base rate only"
    lines = [Line(sku="X", quantity=1, unit_price_minor=1000)]
    assert points_for(purchase(1000, lines, store="kl-01"), rules) == 20
    assert points_for(purchase(1000, lines, store="pg-02"), rules) == 10
    tuesday = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
    assert points_for(purchase(1000, lines, store="kl-01", at=tuesday), rules) == 10
    morning = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)  # 09:00 local
    assert points_for(purchase(1000, lines, store="kl-01", at=morning), rules) == 10


def test_tier_multiplier_minimum_spend_and_caps() -> None:
    rules = RULES.model_copy(
        update={
            "tier_multipliers": {"gold": Decimal("1.5")},
            "minimum_spend_minor": {"MYR": 500},
            "per_purchase_cap": 100,
            "per_day_cap": 120,
        }
    )
    assert points_for(purchase(499), rules) == 0
    assert points_for(purchase(2000), rules, tier="gold") == 30
    assert points_for(purchase(100_000), rules) == 100
    assert points_for(purchase(100_000), rules, earned_today=100) == 20
    assert points_for(purchase(100_000), rules, earned_today=500) == 0


def test_discounted_lines_earn_on_the_total_paid() -> None:
    lines = [Line(sku="A", quantity=2, unit_price_minor=1000)]  # RM20 of goods, RM15 paid
    assert points_for(purchase(1500, lines), RULES) == 15


@pytest.mark.parametrize(
    ("update", "field"),
    [
        ({"base_rates": {"XXX": 1}}, "base_rates"),
        ({"base_rates": {"MYR": -1}}, "base_rates"),
        ({"rounding": "banker"}, "rounding"),
        ({"time_zone": "Nowhere/Land"}, "time_zone"),
        ({"per_day_cap": 0}, "per_day_cap"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_invalid_rules_name_the_field(update: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        EarningRules.model_validate({"base_rates": {"MYR": 1}, **update})
    assert field in str(caught.value)


def test_promotion_dates_must_be_ordered() -> None:
    with pytest.raises(ValidationError, match="ends_on"):
        Promotion(
            name="x", multiplier=Decimal(2), starts_on=date(2026, 2, 1), ends_on=date(2026, 1, 1)
        )


@given(
    points=st.integers(0, 10_000),
    total=st.integers(1, 1_000_000),
    refunds=st.lists(st.integers(1, 1_000_000), max_size=6),
)
def test_partial_refunds_never_take_back_more_than_was_earned(
    points: int, total: int, refunds: list[int]
) -> None:
    reversed_so_far = 0
    refunded = 0
    for amount in refunds:
        refunded = min(total, refunded + amount)
        step = refund_share(points, total, refunded, reversed_so_far)
        assert step >= 0
        reversed_so_far += step
        assert reversed_so_far <= points
    if refunded == total:
        assert reversed_so_far == points
