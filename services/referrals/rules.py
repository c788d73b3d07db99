"""The referral programme's rules as pure functions: no database, no clock, no HTTP.

Everything that decides money-like outcomes (does a referral qualify, does a refund cancel
it, is it suspicious, how many points each side gets, which month a cap counts in) lives
here so that it can be tested to the second and across time zones.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
"""No 0/O, 1/I/L: codes are read out at tills and typed from screenshots."""
CODE_LENGTH = 8
_CODE_NOISE = re.compile(r"[\s\-_.]")
_GMAIL_DOMAINS = {"gmail.com", "googlemail.com"}

Qualification = Literal["qualified", "unqualified", "expired"]
FlagReason = Literal["self_referral", "bought_before", "circular", "velocity"]


class Programme(BaseModel):
    """One version of the referral programme (what the admin API accepts)."""

    model_config = ConfigDict(extra="forbid")

    referrer_points: int = Field(ge=0, le=1_000_000, description="Points for the referrer.")
    referee_points: int = Field(ge=0, le=1_000_000, description="Welcome points for the friend.")
    referrer_points_by_tier: dict[str, int] = Field(
        default_factory=dict,
        description="The referrer's points by loyalty tier, instead of `referrer_points`.",
    )
    minimum_purchase_minor: int = Field(
        ge=0, description="The friend's first purchase must reach this, in minor units."
    )
    currency: str = Field(default="MYR", pattern="^[A-Z]{3}$")
    qualify_within_days: int = Field(
        ge=1, le=365, description="Days after signup in which that purchase must happen."
    )
    monthly_cap: int | None = Field(
        default=None, ge=0, description="Referrer rewards per calendar month (none: no cap)."
    )

    @field_validator("referrer_points_by_tier")
    @classmethod
    def _points_in_range(cls, value: dict[str, int]) -> dict[str, int]:
        for tier, points in value.items():
            if not 0 <= points <= 1_000_000:
                raise ValueError(f"{tier}: points must be between 0 and 1000000")
        return value

    @model_validator(mode="after")
    def _rewards_something(self) -> Programme:
        # A tier table of zeros rewards nobody either, so its values count, not its keys.
        tier_points = any(self.referrer_points_by_tier.values())
        if not (self.referrer_points or self.referee_points or tier_points):
            raise ValueError("a programme must reward at least one side")
        return self


@dataclass(frozen=True)
class Party:
    """What the abuse guards know of one side of a referral."""

    customer_id: uuid.UUID
    email_key: str | None = None
    phone_key: str | None = None
    fingerprints: frozenset[tuple[str, str]] = field(default_factory=frozenset)


def new_code() -> str:
    """A fresh random code: 31^8 ≈ 8.5e11 values, unrelated to the customer id."""
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalise_code(text: str) -> str | None:
    """The stored form of a code as typed (any case, spaces or dashes); None if malformed."""
    if not text.isascii():  # "ß".upper() is "SS": only what the alphabet spells counts
        return None
    code = _CODE_NOISE.sub("", text).upper()
    if len(code) != CODE_LENGTH or any(char not in CODE_ALPHABET for char in code):
        return None
    return code


def display_code(code: str) -> str:
    """`ABCD-EFGH`: easier to read out."""
    return f"{code[:4]}-{code[4:]}"


def email_key(email: str | None) -> str | None:
    """An address reduced to its mailbox: case, `+tags` and Gmail's dots do not count."""
    if not email or "@" not in email:
        return None
    local, _, domain = email.strip().lower().rpartition("@")
    local = local.split("+", 1)[0]
    if domain in _GMAIL_DOMAINS:
        local = local.replace(".", "")
        domain = "gmail.com"
    return f"{local}@{domain}" if local else None


def phone_key(phone: str | None) -> str | None:
    """Digits only (the events carry E.164 already; this also absorbs stray formatting)."""
    if not phone:
        return None
    digits = "".join(char for char in phone if char.isdigit())
    return digits or None


def qualification(
    signed_up_at: datetime,
    purchased_at: datetime,
    total_minor: int,
    currency: str,
    programme: Programme,
) -> Qualification:
    """What the referee's *first* purchase makes of a referral.

    `expired` when it came later than `qualify_within_days` after signup (the end itself
    still counts), `unqualified` when it came in time but below the minimum or in another
    currency, else `qualified`. Instants are compared, so time zones do not matter.
    """
    if purchased_at > signed_up_at + timedelta(days=programme.qualify_within_days):
        return "expired"
    if currency != programme.currency or total_minor < programme.minimum_purchase_minor:
        return "unqualified"
    return "qualified"


def refund_cancels(
    purchased_at: datetime,
    refunded_at: datetime,
    kept_minor: int,
    minimum_minor: int,
    return_window: timedelta,
) -> bool:
    """True when a refund of the qualifying purchase cancels the rewards.

    Only a refund inside the return window (its end included) can, and only when what
    the friend kept falls below the minimum.
    """
    return refunded_at <= purchased_at + return_window and kept_minor < minimum_minor


def abuse_reasons(
    referrer: Party,
    referee: Party,
    *,
    referee_bought_before: bool,
    circular: bool,
    recent_by_referrer: int,
    velocity_limit: int,
) -> list[FlagReason]:
    """Why a referral should wait for review (empty: it may go ahead).

    `recent_by_referrer` counts the referrer's referrals in the velocity window, this
    one excluded; more than `velocity_limit` including this one is a burst.
    """
    reasons: list[FlagReason] = []
    same_person = (
        referrer.customer_id == referee.customer_id
        or (referrer.email_key is not None and referrer.email_key == referee.email_key)
        or (referrer.phone_key is not None and referrer.phone_key == referee.phone_key)
        or bool(referrer.fingerprints & referee.fingerprints)
    )
    if same_person:
        reasons.append("self_referral")
    if referee_bought_before:
        reasons.append("bought_before")
    if circular:
        reasons.append("circular")
    if recent_by_referrer + 1 > velocity_limit:
        reasons.append("velocity")
    return reasons


def reward_points(programme: Programme, referrer_tier: str | None) -> tuple[int, int]:
    """(referrer's points, referee's points); the referrer's may depend on its tier."""
    referrer = programme.referrer_points
    if referrer_tier is not None and referrer_tier in programme.referrer_points_by_tier:
        referrer = programme.referrer_points_by_tier[referrer_tier]
    return referrer, programme.referee_points


def month_bounds(moment: datetime, zone: str) -> tuple[datetime, datetime]:
    """The calendar month (in the business's zone) that `moment` falls in, as instants."""
    local = moment.astimezone(ZoneInfo(zone))
    start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


def within_cap(rewarded_this_month: int, cap: int | None) -> bool:
    """True when the referrer may get another reward this month."""
    return cap is None or rewarded_this_month < cap


def late_attribution_allowed(
    signed_up_at: datetime | None, attributed_at: datetime, window: timedelta
) -> bool:
    """A code given after signup counts within `window` of it (end included)."""
    return signed_up_at is None or attributed_at <= signed_up_at + window


def is_circular(referee_id: uuid.UUID, chain_above_referrer: Collection[uuid.UUID]) -> bool:
    """True when the referee referred the referrer, directly or through others (A→B→A).

    `chain_above_referrer` holds the referrer's own referrer, that one's referrer, etc.
    """
    return referee_id in chain_above_referrer
