"""The send ledger's entry point: every campaign and trigger creates its sends here.

One row per (source, customer, channel), where source is `campaign:<id>` or
`trigger:<name>:<occurrence>`. The row is inserted with ON CONFLICT DO NOTHING, so an
event redelivered or a campaign restarted never queues a second message; and a source
that already holds a row for the customer on any channel gets no other, so a redelivery
after the customer gained a better channel does not send twice either.

The channel is chosen here, among the caller's channels in priority order: the first
one the customer can be reached on now (`policy.unreachable`). When none can, a
`skipped` row on the first channel records why, so campaign results can show it. The
dispatcher checks the policy again at send time.

The payload stored with the row is `{"template", "marketing", "data"}`: `data` is the
caller's (offer, link ...), the rest tells the dispatcher how to render and what policy
applies.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from services.messaging import policy
from services.messaging.models import recipients, sends

CHUNK = 2000
"""Rows per statement in `enqueue_many`."""

RECIPIENT_COLUMNS = (
    recipients.c.customer_id,
    recipients.c.status,
    recipients.c.email,
    recipients.c.phone,
    recipients.c.consents,
    recipients.c.undeliverable,
)


@dataclass(frozen=True)
class EnqueueRow:
    """One intended message, as `enqueue` takes it."""

    source: str
    customer_id: uuid.UUID
    channels: Sequence[str]
    template: str
    payload: dict[str, Any]
    not_before: datetime
    variant: str | None = None
    marketing: bool = True
    id: uuid.UUID = field(default_factory=uuid.uuid4)


def ledger_row(
    row: EnqueueRow, recipient: Mapping[Any, Any] | None, now: datetime
) -> dict[str, Any]:
    """The ledger row for `row`: queued on the first reachable channel, else skipped."""
    if not row.channels:
        raise ValueError("enqueue needs at least one channel")
    channel, status, reason = row.channels[0], "skipped", None
    for candidate in row.channels:
        why = policy.unreachable(recipient, candidate, marketing=row.marketing)
        if why is None:
            channel, status, reason = candidate, "queued", None
            break
        reason = reason or why
    return {
        "id": row.id,
        "source": row.source,
        "customer_id": row.customer_id,
        "channel": channel,
        "variant": row.variant,
        "status": status,
        "reason": reason,
        "payload": {"template": row.template, "marketing": row.marketing, "data": row.payload},
        "not_before": row.not_before,
        "attempts": 0,
        "created_at": now,
    }


async def enqueue(
    session: AsyncSession,
    *,
    source: str,
    customer_id: uuid.UUID,
    channels: Sequence[str],
    template: str,
    payload: dict[str, Any],
    not_before: datetime,
    variant: str | None = None,
    marketing: bool = True,
) -> uuid.UUID | None:
    """Queue one message; the new row's id (queued or skipped), None when already there."""
    row = EnqueueRow(
        source, customer_id, channels, template, payload, not_before, variant, marketing
    )
    ids = await _insert(session, [row])
    return ids[0] if ids else None


async def enqueue_many(session: AsyncSession, rows: Sequence[EnqueueRow]) -> int:
    """`enqueue` set-wise, a statement per chunk; the number of rows inserted."""
    inserted = 0
    for start in range(0, len(rows), CHUNK):
        inserted += len(await _insert(session, rows[start : start + CHUNK]))
    return inserted


async def _insert(session: AsyncSession, rows: Sequence[EnqueueRow]) -> list[uuid.UUID]:
    now = datetime.now(UTC)
    customer_ids = list({row.customer_id for row in rows})
    found = await session.execute(
        sa.select(*RECIPIENT_COLUMNS).where(recipients.c.customer_id == sa.any_(_array("ids"))),
        {"ids": customer_ids},
    )
    by_id = {r["customer_id"]: r for r in found.mappings()}
    taken = await session.execute(
        sa.select(sends.c.source, sends.c.customer_id).where(
            sends.c.customer_id == sa.any_(_array("ids")),
            sends.c.source == sa.any_(sa.bindparam("sources", type_=ARRAY(sa.Text))),
        ),
        {"ids": customer_ids, "sources": list({row.source for row in rows})},
    )
    existing = {(source, customer) for source, customer in taken.all()}
    values = []
    for row in rows:
        key = (row.source, row.customer_id)
        if key in existing:
            continue
        existing.add(key)
        values.append(ledger_row(row, by_id.get(row.customer_id), now))
    if not values:
        return []
    result = await session.execute(
        _INSERT,
        {
            "ids": [v["id"] for v in values],
            "sources": [v["source"] for v in values],
            "customers": [v["customer_id"] for v in values],
            "channels": [v["channel"] for v in values],
            "variants": [v["variant"] for v in values],
            "statuses": [v["status"] for v in values],
            "reasons": [v["reason"] for v in values],
            "payloads": [json.dumps(v["payload"], default=str) for v in values],
            "not_befores": [v["not_before"] for v in values],
            "now": now,
        },
    )
    return list(result.scalars())


def _array(name: str) -> sa.BindParameter[Any]:
    return sa.bindparam(name, type_=ARRAY(sa.Uuid))


# One statement per chunk whatever its size: arrays unnested server-side, rather than a
# VALUES list of thousands of parameters that SQLAlchemy would compile for every chunk.
_INSERT = sa.text(
    """
    INSERT INTO messaging.sends
        (id, source, customer_id, channel, variant, status, reason, payload, not_before,
         attempts, created_at)
    SELECT v.id, v.source, v.customer_id, v.channel, v.variant, v.status, v.reason,
           CAST(v.payload AS jsonb), v.not_before, 0, :now
    FROM unnest(
        CAST(:ids AS uuid[]), CAST(:sources AS text[]), CAST(:customers AS uuid[]),
        CAST(:channels AS text[]), CAST(:variants AS text[]), CAST(:statuses AS text[]),
        CAST(:reasons AS text[]), CAST(:payloads AS text[]), CAST(:not_befores AS timestamptz[])
    ) AS v(id, source, customer_id, channel, variant, status, reason, payload, not_before)
    ON CONFLICT DO NOTHING
    RETURNING id
    """
)
