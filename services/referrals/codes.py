"""Referral codes: one current code per customer, renewals with a grace period, lookups.

A code is random (`rules.new_code`), never derived from the customer id, so it reveals
nothing and cannot be guessed from another customer's. The `codes` table keeps every code
a customer ever had: the current one has `replaced_at IS NULL` (a partial unique index
allows one per customer) and a replaced one keeps working for a grace period, because
it is already printed on flyers and shared in chats.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.referrals import rules
from services.referrals.models import codes, customers

MAX_ATTEMPTS = 16
"""Collisions are ~1e-11 likely each; 16 in a row means something else is wrong."""
MAX_MERGE_HOPS = 16


class CodeAllocationFailed(RuntimeError):
    """No free code after MAX_ATTEMPTS tries: a broken generator, not bad luck."""


async def current_code(session: AsyncSession, customer_id: uuid.UUID) -> Row[Any] | None:
    """The row of the customer's current code, if it has one."""
    result = await session.execute(
        select(codes).where(codes.c.customer_id == customer_id, codes.c.replaced_at.is_(None))
    )
    return result.one_or_none()


async def previous_codes(session: AsyncSession, customer_id: uuid.UUID) -> list[Row[Any]]:
    """The rows of the customer's replaced codes, most recently replaced first."""
    result = await session.execute(
        select(codes)
        .where(codes.c.customer_id == customer_id, codes.c.replaced_at.is_not(None))
        .order_by(codes.c.replaced_at.desc(), codes.c.code)
    )
    return list(result.all())


async def ensure_code(session: AsyncSession, customer_id: uuid.UUID, now: datetime) -> str:
    """The customer's current code, creating one if it has none.

    `ON CONFLICT DO NOTHING` covers both unique indexes: a code another customer holds
    (the primary key: draw again) and a current code a concurrent call just created for
    this customer (the partial index: the next loop finds and returns it).
    """
    for _ in range(MAX_ATTEMPTS):
        found = await current_code(session, customer_id)
        if found is not None:
            return str(found.code)
        candidate = rules.new_code()
        inserted = await session.execute(
            insert(codes)
            .values(code=candidate, customer_id=customer_id, created_at=now, replaced_at=None)
            .on_conflict_do_nothing()
            .returning(codes.c.code)
        )
        if inserted.scalar_one_or_none() is not None:
            return candidate
    raise CodeAllocationFailed(f"no free referral code for {customer_id}")


async def renew_code(session: AsyncSession, customer_id: uuid.UUID, now: datetime) -> str:
    """Replace the customer's current code with a new one; the old one enters its grace."""
    await session.execute(
        update(codes)
        .where(codes.c.customer_id == customer_id, codes.c.replaced_at.is_(None))
        .values(replaced_at=now)
    )
    return await ensure_code(session, customer_id, now)


async def owner_of_code(
    session: AsyncSession, code_text: str, at: datetime, grace: timedelta
) -> uuid.UUID | None:
    """The customer a code (as typed, any case or dashes) refers people for at `at`.

    None when the text is not a code, no one has it, it was replaced more than `grace`
    before `at` (the end itself still counts), or its owner is erased or unknown to
    this service. A merged owner resolves to the customer it was merged into.
    """
    code = rules.normalise_code(code_text)
    if code is None:
        return None
    row = (
        await session.execute(
            select(codes.c.customer_id, codes.c.replaced_at).where(codes.c.code == code)
        )
    ).one_or_none()
    if row is None:
        return None
    if row.replaced_at is not None and at > row.replaced_at + grace:
        return None
    return await live_customer(session, row.customer_id)


async def live_customer(session: AsyncSession, customer_id: uuid.UUID) -> uuid.UUID | None:
    """The active customer that `customer_id` is now (following merges), or None.

    Erased customers and ids this service has no projection row for resolve to None:
    an erased person must not keep earning through a code that is still in circulation.
    """
    current = customer_id
    for _ in range(MAX_MERGE_HOPS):
        row = (
            await session.execute(
                select(customers.c.status, customers.c.merged_into).where(
                    customers.c.customer_id == current
                )
            )
        ).one_or_none()
        if row is None:
            return None
        if row.status == "active":
            return current
        if row.status != "merged" or row.merged_into is None:
            return None
        current = row.merged_into
    return None
