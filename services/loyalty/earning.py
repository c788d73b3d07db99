"""Earning rules: how many points a purchase earns. Pure: plain data in, plain data out.

A rule set is versioned by the admin API; the version in force at the purchase time
applies. The computation, in order:

1. Purchases below `minimum_spend_minor` (in the purchase's currency) earn nothing.
2. Each line earns `quantity * unit price * base rate`, times the highest multiplier that
   matches it (its SKU's, else its category's, else 1), times every promotion in force
   for that moment and store. Amounts not covered by lines (service charge, rounding of
   the till) earn at the base rate.
3. The tier's multiplier applies to the sum.
4. The result is rounded by `rounding` (`floor` by default: a customer never sees a
   fraction, and never gets a point the rate does not give) and capped by
   `per_purchase_cap` and by what `per_day_cap` leaves for the day.

Rates are "points per one major unit" (e.g. 1 point per RM1 → `{"MYR": 1}`), applied to
minor units with the currency's exponent, so RM12.50 at rate 1 earns 12.5 before rounding.
"""

from __future__ import annotations

import math
from datetime import date, datetime, time
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

CURRENCY_EXPONENTS = {
    "MYR": 2,
    "THB": 2,
    "SGD": 2,
    "IDR": 2,
    "PHP": 2,
    "VND": 0,
    "USD": 2,
    "EUR": 2,
    "JPY": 0,
    "KRW": 0,
}
Rounding = Literal["floor", "nearest", "ceiling"]
_ROUNDING = {"floor": ROUND_FLOOR, "nearest": ROUND_HALF_UP, "ceiling": ROUND_CEILING}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Promotion(Strict):
    """A time-boxed multiplier, optionally for some weekdays, hours or stores only."""

    name: str = Field(min_length=1, max_length=100)
    multiplier: Decimal = Field(gt=0, le=100)
    starts_on: date
    ends_on: date
    weekdays: list[int] | None = Field(
        default=None, description="ISO weekdays (1 = Monday ... 7 = Sunday)"
    )
    from_time: time | None = None
    until_time: time | None = None
    stores: list[str] | None = None
    categories: list[str] | None = Field(
        default=None, description="Only lines in these categories (all lines when absent)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Promotion:
        if self.ends_on < self.starts_on:
            raise ValueError("ends_on is before starts_on")
        if self.weekdays is not None and not all(1 <= d <= 7 for d in self.weekdays):
            raise ValueError("weekdays are 1 (Monday) to 7 (Sunday)")
        if (self.from_time is None) != (self.until_time is None):
            raise ValueError("give both from_time and until_time, or neither")
        return self

    def applies(self, local: datetime, store_id: str | None, category: str | None) -> bool:
        """True when the promotion covers this local moment, store and line."""
        if not self.starts_on <= local.date() <= self.ends_on:
            return False
        if self.weekdays is not None and local.isoweekday() not in self.weekdays:
            return False
        if (
            self.from_time is not None
            and self.until_time is not None
            and not self.from_time <= local.time() < self.until_time
        ):
            return False
        if self.stores is not None and store_id not in self.stores:
            return False
        return self.categories is None or category in self.categories


class EarningRules(Strict):
    """One version of the programme's earning rules (what the admin API accepts)."""

    base_rates: dict[str, Decimal] = Field(
        description="Points per one major unit, by ISO 4217 currency, e.g. {'MYR': 1}.",
        examples=[{"MYR": 1, "THB": 0.04}],
    )
    category_multipliers: dict[str, Decimal] = Field(default_factory=dict)
    sku_multipliers: dict[str, Decimal] = Field(default_factory=dict)
    promotions: list[Promotion] = Field(default_factory=list)
    tier_multipliers: dict[str, Decimal] = Field(default_factory=dict)
    minimum_spend_minor: dict[str, int] = Field(default_factory=dict)
    per_purchase_cap: int | None = Field(default=None, gt=0)
    per_day_cap: int | None = Field(default=None, gt=0)
    rounding: Rounding = "floor"
    time_zone: str = Field(default="Asia/Kuala_Lumpur", description="For promotions' dates.")

    @field_validator("base_rates", "minimum_spend_minor")
    @classmethod
    def _known_currencies(cls, value: dict[str, object]) -> dict[str, object]:
        for code in value:
            if code not in CURRENCY_EXPONENTS:
                raise ValueError(f"unknown or unsupported currency {code!r}")
        return value

    @field_validator("base_rates", "category_multipliers", "sku_multipliers", "tier_multipliers")
    @classmethod
    def _non_negative(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        for key, rate in value.items():
            if rate < 0 or rate > 1000:
                raise ValueError(f"{key}: must be between 0 and 1000")
        return value

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value


class Line(BaseModel):
    """A receipt line as the rules see it."""

    sku: str
    category: str | None = None
    quantity: int
    unit_price_minor: int


class PurchaseFacts(BaseModel):
    """What the rules need to know about a purchase."""

    currency: str
    total_minor: int
    lines: list[Line]
    purchased_at: datetime
    store_id: str | None = None


def points_for(
    purchase: PurchaseFacts,
    rules: EarningRules,
    *,
    tier: str | None = None,
    earned_today: int = 0,
) -> int:
    """The points `purchase` earns under `rules` (see the module docstring)."""
    rate = rules.base_rates.get(purchase.currency)
    if rate is None or purchase.total_minor <= 0:
        return 0
    if purchase.total_minor < rules.minimum_spend_minor.get(purchase.currency, 0):
        return 0
    scale = Decimal(10) ** CURRENCY_EXPONENTS[purchase.currency]
    local = purchase.purchased_at.astimezone(ZoneInfo(rules.time_zone))
    raw = Decimal(0)
    covered = 0
    for line in purchase.lines:
        amount = line.quantity * line.unit_price_minor
        covered += amount
        multiplier = rules.sku_multipliers.get(line.sku)
        if multiplier is None and line.category is not None:
            multiplier = rules.category_multipliers.get(line.category)
        multiplier = Decimal(1) if multiplier is None else multiplier
        for promotion in rules.promotions:
            if promotion.applies(local, purchase.store_id, line.category):
                multiplier *= promotion.multiplier
        raw += Decimal(amount) / scale * rate * multiplier
    # What the lines do not explain (charges, till rounding) earns at the base rate; lines
    # summing above the total (discounts) earn on the total only.
    if covered < purchase.total_minor:
        raw += Decimal(purchase.total_minor - covered) / scale * rate
    elif covered > purchase.total_minor and covered > 0:
        raw = raw * Decimal(purchase.total_minor) / Decimal(covered)
    if tier is not None:
        raw *= rules.tier_multipliers.get(tier, Decimal(1))
    points = int(raw.to_integral_value(rounding=_ROUNDING[rules.rounding]))
    if rules.per_purchase_cap is not None:
        points = min(points, rules.per_purchase_cap)
    if rules.per_day_cap is not None:
        points = min(points, max(0, rules.per_day_cap - earned_today))
    return max(points, 0)


def refund_share(points: int, total_minor: int, refunded_minor: int, already_reversed: int) -> int:
    """Points to take back for a refund: the refunded share of the earned points.

    Cumulative, so that several partial refunds never take back more than was earned:
    the share of everything refunded so far, less what earlier refunds already reversed.
    """
    if total_minor <= 0:
        return 0
    refunded_minor = min(refunded_minor, total_minor)
    due = math.floor(Decimal(points) * Decimal(refunded_minor) / Decimal(total_minor))
    if refunded_minor == total_minor:
        due = points
    return max(0, due - already_reversed)
