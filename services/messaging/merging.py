"""`customer.merged` and `customer.erased` on the recipients projection and the ledger.

Merge: the duplicate is folded into the survivor. The survivor takes the merged profile
from the event; for the other facts the rule (`folded_facts`, pure) is:

* consents: per channel the most recent change wins (contacts applies the same rule and
  publishes `consent.changed` for the survivor, which then changes nothing here);
* tier, expiring points and scores: the survivor's, or the duplicate's where the survivor
  has none (loyalty and scoring publish the merged truth afterwards, which wins on time);
* points: the sum of both balances unless the survivor's balance already post-dates the
  merge (loyalty merges balances the same way and publishes the result);
* signup: the earliest; last purchase: the latest; segment memberships move over.

The send ledger is history and stays as it is: sent, delivered, failed and skipped rows
keep the duplicate's id, so campaign reports do not change, and the GDPR export of the
survivor includes them through `merged_into`. Queued sends move to the survivor, except
where the survivor already has a send from the same campaign or trigger occurrence:
those are cancelled (reason `merged`) so one person gets one message. Reserved rows are
in the dispatcher's hands and are left alone.

Erasure drops every personal field (the profile, consents, undeliverable marks) of the
customer and of the rows merged into it, cancels their queued sends (reason `erased`)
and drops the caller's data from their ledger payloads (`data`: links, addresses, names),
keeping the template name; the anonymous rows stay for reporting. A row for a customer
never seen is created erased, so a late profile event cannot bring the data back.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.messaging import recipients as projection
from services.messaging.models import recipients, segment_members, sends
from shared.db import merges
from shared.events.contacts import CustomerMerged

FACT_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "tier": ("tier",),
    "expiring": ("expiring_points", "expiring_at"),
    "scores": ("churn_band", "churn_risk", "clv", "rfm_segment"),
}
"""Fact groups the survivor takes from the duplicate only when it has none itself."""


def _time(facts: Mapping[str, Any], key: str) -> datetime | None:
    value = facts.get(key)
    return None if value is None else datetime.fromisoformat(str(value))


def folded_facts(
    survivor: Mapping[str, Any], duplicate: Mapping[str, Any], merged_at: datetime
) -> dict[str, Any]:
    """The survivor's new values (profile aside) once `duplicate` is folded into it."""
    s_facts, d_facts = survivor["facts_at"], duplicate["facts_at"]
    facts = dict(s_facts)
    values: dict[str, Any] = {}

    consents = dict(survivor["consents"])
    for channel, status in duplicate["consents"].items():
        key = f"consent:{channel}"
        theirs, ours = _time(d_facts, key), _time(s_facts, key)
        if channel not in consents or (theirs and (ours is None or theirs > ours)):
            consents[channel] = status
            if theirs is not None:
                facts[key] = d_facts[key]
    values["consents"] = consents

    for group, columns in FACT_COLUMNS.items():
        if group not in s_facts and group in d_facts:
            values |= {column: duplicate[column] for column in columns}
            facts[group] = d_facts[group]

    ours_at = _time(s_facts, "points")
    if ours_at is None or ours_at < merged_at:
        kept, folded = survivor["points_balance"], duplicate["points_balance"]
        if kept is not None or folded is not None:
            values["points_balance"] = (kept or 0) + (folded or 0)

    for key, value in d_facts.items():
        if key.startswith("segment:"):
            ours = _time(s_facts, key)
            if ours is None or datetime.fromisoformat(str(value)) > ours:
                facts[key] = value

    signed_up = [at for at in (survivor["signed_up_at"], duplicate["signed_up_at"]) if at]
    bought = [at for at in (survivor["last_purchase_at"], duplicate["last_purchase_at"]) if at]
    values["signed_up_at"] = min(signed_up) if signed_up else None
    values["last_purchase_at"] = max(bought) if bought else None
    values["facts_at"] = facts
    return values


async def merge(session: AsyncSession, event: CustomerMerged, now: datetime) -> bool:
    """Fold `event.merged_id` into its survivor; False when already done (a redelivery)."""
    survivor_id = await projection.survivor_of(session, event.survivor_id)
    duplicate_id = event.merged_id
    if survivor_id == duplicate_id:
        return False
    for customer_id in sorted((survivor_id, duplicate_id)):
        await projection.ensure(session, customer_id, now)
    rows = {
        row.customer_id: dict(row._mapping)
        for row in await session.execute(
            sa.select(recipients)
            .where(recipients.c.customer_id.in_([survivor_id, duplicate_id]))
            .order_by(recipients.c.customer_id)
            .with_for_update()
        )
    }
    survivor, duplicate = rows[survivor_id], rows[duplicate_id]
    if duplicate["status"] == projection.MERGED:
        return False

    await session.execute(
        sa.update(recipients)
        .where(recipients.c.customer_id == survivor_id)
        .values(**folded_facts(survivor, duplicate, event.merged_at), updated_at=now)
    )
    await projection.apply_profile(session, survivor_id, event.profile, event.merged_at, now)
    await session.execute(
        sa.update(recipients)
        .where(recipients.c.customer_id == duplicate_id)
        .values(
            status=projection.MERGED,
            merged_into=survivor_id,
            # The survivor carries the merged profile now; keep no second copy.
            **dict.fromkeys(projection.PERSONAL_FIELDS),
            consents={},
            undeliverable={},
            updated_at=now,
        )
    )
    await _move_segments(session, survivor_id, duplicate_id)
    await _move_queued_sends(session, survivor_id, duplicate_id)
    return True


async def _move_segments(
    session: AsyncSession, survivor_id: uuid.UUID, duplicate_id: uuid.UUID
) -> None:
    moved = sa.select(
        segment_members.c.segment_id,
        sa.literal(survivor_id, sa.Uuid).label("customer_id"),
        segment_members.c.segment_name,
        segment_members.c.entered_at,
    ).where(segment_members.c.customer_id == duplicate_id)
    await session.execute(
        insert(segment_members)
        .from_select(["segment_id", "customer_id", "segment_name", "entered_at"], moved)
        .on_conflict_do_nothing()
    )
    await session.execute(
        sa.delete(segment_members).where(segment_members.c.customer_id == duplicate_id)
    )


async def _move_queued_sends(
    session: AsyncSession, survivor_id: uuid.UUID, duplicate_id: uuid.UUID
) -> None:
    theirs = sends.alias("survivor_sends")
    await session.execute(
        sa.update(sends)
        .where(
            sends.c.customer_id == duplicate_id,
            sends.c.status == "queued",
            sa.exists().where(
                theirs.c.customer_id == survivor_id, theirs.c.source == sends.c.source
            ),
        )
        .values(status="cancelled", reason="merged")
    )
    await session.execute(
        sa.update(sends)
        .where(sends.c.customer_id == duplicate_id, sends.c.status == "queued")
        .values(customer_id=survivor_id)
    )


async def erase(session: AsyncSession, customer_id: uuid.UUID, now: datetime) -> None:
    """Drop the customer's personal data here and stop every message still queued."""
    await projection.ensure(session, customer_id, now, status=projection.ERASED)
    ids = [customer_id, *await merges.merged_into(session, recipients, customer_id)]
    await session.execute(
        sa.update(recipients)
        .where(recipients.c.customer_id.in_(ids))
        .values(
            **dict.fromkeys(projection.PERSONAL_FIELDS),
            consents={},
            undeliverable={},
            updated_at=now,
        )
    )
    # A merged row keeps its status and link, so the merge stays applied after erasure.
    await session.execute(
        sa.update(recipients)
        .where(recipients.c.customer_id == customer_id, recipients.c.status != projection.MERGED)
        .values(status=projection.ERASED)
    )
    await session.execute(
        sa.update(sends)
        .where(sends.c.customer_id.in_(ids), sends.c.status == "queued")
        .values(status="cancelled", reason="erased")
    )
    await session.execute(
        sa.update(sends)
        .where(sends.c.customer_id.in_(ids), sends.c.status != "reserved")
        .values(payload=sends.c.payload.op("-", return_type=JSONB)("data"))
    )
