"""Attributing a new customer (the referee) to the customer whose code they gave.

The first valid attribution wins: the unique index on `referrals.referee_id` decides,
also between two concurrent attempts (`ON CONFLICT DO NOTHING`, then the loser reads the
winner). Suspicious referrals are stored like the others but with status `flagged` and
their reasons, so that an admin can approve or reject them; nothing is rewarded for them
until then.

The abuse guards, gathered here from the database and decided by `rules.abuse_reasons`:

* self-referral: the same customer, the same normalised email or phone, or a shared
  device or payment fingerprint;
* bought before: the referee has a stored purchase dated before its own `signed_up_at`,
  i.e. it was already a customer (say, imported with its history) and is not new business;
* circular: the referee is somewhere in the referrer's chain of referrers (A→B→A);
* velocity: the referrer has more referrals than the limit within the window.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Row, exists, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.referrals import rules
from services.referrals.codes import owner_of_code
from services.referrals.models import customers, fingerprints, purchases, referrals
from services.referrals.programmes import programme_at
from shared.settings import Settings

RefusalReason = Literal[
    "malformed_code", "unknown_code", "already_referred", "window_passed", "unknown_customer"
]
MAX_CHAIN_HOPS = 16


class AttributionRefused(Exception):
    """The attribution cannot be made; `reason` is stable, `message` is for people."""

    def __init__(self, reason: RefusalReason, message: str) -> None:
        super().__init__(message)
        self.reason: RefusalReason = reason
        self.message = message


@dataclass(frozen=True)
class Attributed:
    """The referral an attribution made (`created`) or found (a repeat)."""

    referral_id: uuid.UUID
    status: str
    flag_reasons: list[str]
    created: bool


async def store_fingerprints(
    session: AsyncSession,
    customer_id: uuid.UUID,
    pairs: Sequence[tuple[str, str]],
    now: datetime,
) -> int:
    """Remember (kind, value) fingerprints of a customer; answers how many were new."""
    stored = 0
    for kind, value in pairs:
        result = await session.execute(
            insert(fingerprints)
            .values(customer_id=customer_id, kind=kind, value=value, seen_at=now)
            .on_conflict_do_nothing()
            .returning(fingerprints.c.value)
        )
        stored += result.scalar_one_or_none() is not None
    return stored


async def referral(session: AsyncSession, referral_id: uuid.UUID) -> Row[Any] | None:
    """One referral's row."""
    result = await session.execute(select(referrals).where(referrals.c.id == referral_id))
    return result.one_or_none()


async def _referral_of_referee(session: AsyncSession, referee_id: uuid.UUID) -> Row[Any] | None:
    result = await session.execute(select(referrals).where(referrals.c.referee_id == referee_id))
    return result.one_or_none()


async def _party(session: AsyncSession, customer_id: uuid.UUID) -> rules.Party:
    row = (
        await session.execute(
            select(customers.c.email_key, customers.c.phone_key).where(
                customers.c.customer_id == customer_id
            )
        )
    ).one_or_none()
    held = await session.execute(
        select(fingerprints.c.kind, fingerprints.c.value).where(
            fingerprints.c.customer_id == customer_id
        )
    )
    return rules.Party(
        customer_id=customer_id,
        email_key=row.email_key if row else None,
        phone_key=row.phone_key if row else None,
        fingerprints=frozenset((kind, value) for kind, value in held.all()),
    )


async def _bought_before(
    session: AsyncSession, customer_id: uuid.UUID, signed_up_at: datetime | None
) -> bool:
    if signed_up_at is None:
        return False
    found = await session.execute(
        select(
            exists().where(
                purchases.c.customer_id == customer_id,
                purchases.c.purchased_at < signed_up_at,
            )
        )
    )
    return bool(found.scalar())


async def _chain_above(session: AsyncSession, referrer_id: uuid.UUID) -> list[uuid.UUID]:
    """The referrer's referrer, that one's referrer, ... up to MAX_CHAIN_HOPS."""
    chain: list[uuid.UUID] = []
    current = referrer_id
    for _ in range(MAX_CHAIN_HOPS):
        above = (
            await session.execute(
                select(referrals.c.referrer_id).where(referrals.c.referee_id == current)
            )
        ).scalar_one_or_none()
        if above is None or above in chain:
            break
        chain.append(above)
        current = above
    return chain


async def _recent_by(
    session: AsyncSession, referrer_id: uuid.UUID, at: datetime, window: timedelta
) -> int:
    counted = await session.execute(
        select(func.count()).where(
            referrals.c.referrer_id == referrer_id,
            referrals.c.attributed_at > at - window,
            referrals.c.attributed_at <= at,
        )
    )
    return int(counted.scalar_one())


def _repeat_or_refuse(existing: Row[Any], referrer_id: uuid.UUID) -> Attributed:
    """A second attribution of a referee: the same referrer is a repeat, another is refused."""
    if existing.referrer_id != referrer_id:
        raise AttributionRefused(
            "already_referred", "This customer was already referred by someone else."
        )
    return Attributed(existing.id, existing.status, list(existing.flag_reasons), created=False)


async def attribute(
    session: AsyncSession,
    *,
    referee_id: uuid.UUID,
    code_text: str,
    source: Literal["signup", "late"],
    at: datetime,
    settings: Settings,
    fingerprints: Sequence[tuple[str, str]] = (),
) -> Attributed:
    """Attribute `referee_id` to the owner of `code_text` at `at`.

    Needs the referee's row in `customers` (the signup handler writes it first). A repeat
    with the same referrer answers the stored referral with `created=False`, so that
    redelivered events and retried requests are harmless.
    """
    code = rules.normalise_code(code_text)
    if code is None:
        raise AttributionRefused(
            "malformed_code",
            f"A referral code is {rules.CODE_LENGTH} letters and digits, e.g. ABCD-EFGH.",
        )
    referee = (
        await session.execute(
            select(customers.c.status, customers.c.signed_up_at).where(
                customers.c.customer_id == referee_id
            )
        )
    ).one_or_none()
    if referee is None or referee.status != "active":
        raise AttributionRefused("unknown_customer", f"No active customer {referee_id}.")
    await store_fingerprints(session, referee_id, fingerprints, at)
    grace = timedelta(days=settings.referrals_code_grace_days)
    referrer_id = await owner_of_code(session, code, at, grace)
    if referrer_id is None:
        raise AttributionRefused("unknown_code", f"No referral code {code} is in use.")
    existing = await _referral_of_referee(session, referee_id)
    if existing is not None:
        return _repeat_or_refuse(existing, referrer_id)
    window = timedelta(days=settings.referrals_late_attribution_days)
    if source == "late" and not rules.late_attribution_allowed(referee.signed_up_at, at, window):
        raise AttributionRefused(
            "window_passed",
            f"A referral code counts up to {window.days} days after signing up.",
        )

    reasons = rules.abuse_reasons(
        await _party(session, referrer_id),
        await _party(session, referee_id),
        referee_bought_before=await _bought_before(session, referee_id, referee.signed_up_at),
        circular=rules.is_circular(referee_id, await _chain_above(session, referrer_id)),
        recent_by_referrer=await _recent_by(
            session, referrer_id, at, timedelta(hours=settings.referrals_velocity_window_hours)
        ),
        velocity_limit=settings.referrals_velocity_limit,
    )
    programme = await programme_at(session, at)
    status = "flagged" if reasons else "pending"
    inserted = await session.execute(
        insert(referrals)
        .values(
            id=uuid.uuid4(),
            referrer_id=referrer_id,
            referee_id=referee_id,
            code=code,
            source=source,
            status=status,
            flag_reasons=list(reasons),
            programme_version=programme[0] if programme else None,
            attributed_at=at,
            created_at=func.now(),
        )
        .on_conflict_do_nothing(index_elements=[referrals.c.referee_id])
        .returning(referrals.c.id)
    )
    referral_id = inserted.scalar_one_or_none()
    if referral_id is None:  # a concurrent attribution of the same referee won
        winner = await _referral_of_referee(session, referee_id)
        assert winner is not None
        return _repeat_or_refuse(winner, referrer_id)
    return Attributed(referral_id, status, list(reasons), created=True)
