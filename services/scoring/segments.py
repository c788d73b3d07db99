"""Saved segments and their membership, kept as customers' scores and facts move.

Two ways to evaluate, which must agree (a test holds them to it):

* `evaluate_customers`, the incremental path: after a customer is rescored, each saved
  rule's Python predicate runs on that customer's `customers` row.
* `evaluate_segment`, the set-wise path: when a segment is saved or its rule changes, one
  `INSERT ... SELECT` and one `DELETE` apply its where-clause to every customer at once.

Only active customers are members: a merged or erased customer (or one whose row is gone)
leaves every segment. Each entry and exit is a `segment.entered` / `segment.exited` event
in the same transaction. Inserts use `ON CONFLICT DO NOTHING ... RETURNING` and deletes
`RETURNING`, so of two transactions racing over one membership only the one that changed
the row publishes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import DateTime, Uuid, and_, any_, bindparam, exists, func, literal, select, tuple_
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.scoring import segment_rules
from services.scoring.models import SCHEMA, customers, segment_members, segments
from shared.events.envelope import Event
from shared.events.scoring import SegmentEntered, SegmentExited
from shared.pipeline.outbox import add_events

SOURCE = "scoring"
EVENT_CHUNK = 2000  # events queued per outbox statement when a whole segment moves
ROW_CHUNK = 5000  # membership rows per statement (asyncpg takes at most 32767 parameters)
_IDS = bindparam("ids", type_=ARRAY(Uuid()))

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Segment:
    """A saved segment; `members` is the current member count."""

    id: uuid.UUID
    name: str
    rule: str
    description: str | None
    created_at: datetime
    updated_at: datetime
    members: int = 0


class NameTaken(Exception):
    """Another segment already has this name."""


@dataclass(frozen=True)
class Member:
    customer_id: uuid.UUID
    entered_at: datetime


# --- evaluation ---------------------------------------------------------------------------


async def evaluate_customers(
    session: AsyncSession, customer_ids: Sequence[uuid.UUID], *, now: datetime
) -> None:
    """Bring every saved segment's membership of `customer_ids` up to date with their rows."""
    ids = sorted(set(customer_ids))
    if not ids:
        return
    saved = (await session.execute(select(segments.c.id, segments.c.name, segments.c.rule))).all()
    if not saved:
        return
    columns = [customers.c[name] for name in segment_rules.COLUMNS]
    rows = {
        row.customer_id: dict(row._mapping)
        for row in await session.execute(
            select(customers.c.customer_id, *columns).where(
                customers.c.customer_id == any_(_IDS), customers.c.status == "active"
            ),
            {"ids": ids},
        )
    }
    current = {
        (row.segment_id, row.customer_id)
        for row in await session.execute(
            select(segment_members.c.segment_id, segment_members.c.customer_id).where(
                segment_members.c.customer_id == any_(_IDS)
            ),
            {"ids": ids},
        )
    }
    wanted: set[tuple[uuid.UUID, uuid.UUID]] = set()
    names: dict[uuid.UUID, str] = {}
    for segment in saved:
        names[segment.id] = segment.name
        try:
            rule = segment_rules.parse(segment.rule)
        except segment_rules.RuleError:
            # Rules are checked on save, so only a rule saved under older attribute names
            # lands here; leave its membership as it is rather than fail the rescore.
            log.warning("scoring.segment.rule_invalid", segment_id=str(segment.id))
            wanted.update(pair for pair in current if pair[0] == segment.id)
            continue
        wanted.update(
            (segment.id, customer_id) for customer_id, row in rows.items() if rule.matches(row, now)
        )
    events: list[Event] = []
    to_add = sorted(wanted - current)
    for start in range(0, len(to_add), ROW_CHUNK):
        added = await session.execute(
            insert(segment_members)
            .values(
                [
                    {"segment_id": s, "customer_id": c, "entered_at": now}
                    for s, c in to_add[start : start + ROW_CHUNK]
                ]
            )
            .on_conflict_do_nothing()
            .returning(segment_members.c.segment_id, segment_members.c.customer_id)
        )
        events += _entered(added, names, now)
    to_remove = sorted(current - wanted)
    for start in range(0, len(to_remove), ROW_CHUNK):
        pairs = tuple_(segment_members.c.segment_id, segment_members.c.customer_id)
        removed = await session.execute(
            segment_members.delete()
            .where(pairs.in_(to_remove[start : start + ROW_CHUNK]))
            .returning(segment_members.c.segment_id, segment_members.c.customer_id)
        )
        events += _exited(removed, names, now)
    await _publish(session, events)


async def evaluate_segment(
    session: AsyncSession, segment_id: uuid.UUID, name: str, rule: str, *, now: datetime
) -> tuple[int, int]:
    """Apply `rule` to every customer at once; the (entered, exited) counts."""
    matching = and_(customers.c.status == "active", segment_rules.parse(rule).where(now))
    added = await session.execute(
        insert(segment_members)
        .from_select(
            ["segment_id", "customer_id", "entered_at"],
            select(
                literal(segment_id, Uuid()),
                customers.c.customer_id,
                literal(now, DateTime(timezone=True)),
            ).where(matching),
        )
        .on_conflict_do_nothing()
        .returning(segment_members.c.segment_id, segment_members.c.customer_id)
    )
    names = {segment_id: name}
    entered = await _publish(session, _entered(added, names, now))
    still = (
        select(customers.c.customer_id)
        .where(customers.c.customer_id == segment_members.c.customer_id, matching)
        .correlate(segment_members)
    )
    removed = await session.execute(
        segment_members.delete()
        .where(segment_members.c.segment_id == segment_id, ~exists(still))
        .returning(segment_members.c.segment_id, segment_members.c.customer_id)
    )
    exited = await _publish(session, _exited(removed, names, now))
    return entered, exited


async def _publish(session: AsyncSession, events: Iterable[Event]) -> int:
    """Queue `events` in chunks, so a segment of a million customers is no single statement."""
    count = 0
    chunk: list[Event] = []
    for event in events:
        chunk.append(event)
        if len(chunk) == EVENT_CHUNK:
            await add_events(session, SCHEMA, chunk, source=SOURCE)
            count, chunk = count + len(chunk), []
    if chunk:
        await add_events(session, SCHEMA, chunk, source=SOURCE)
    return count + len(chunk)


def _entered(rows: Iterable[Any], names: dict[uuid.UUID, str], now: datetime) -> list[Event]:
    return [
        SegmentEntered(
            customer_id=row.customer_id,
            segment_id=row.segment_id,
            segment_name=names[row.segment_id],
            entered_at=now,
        )
        for row in sorted(rows, key=lambda row: (row.customer_id, row.segment_id))
    ]


def _exited(rows: Iterable[Any], names: dict[uuid.UUID, str], now: datetime) -> list[Event]:
    return [
        SegmentExited(
            customer_id=row.customer_id,
            segment_id=row.segment_id,
            segment_name=names[row.segment_id],
            exited_at=now,
        )
        for row in sorted(rows, key=lambda row: (row.customer_id, row.segment_id))
    ]


# --- saved segments -----------------------------------------------------------------------


def _segment(row: Any, members: int) -> Segment:
    return Segment(
        id=row.id,
        name=row.name,
        rule=row.rule,
        description=row.description,
        created_at=row.created_at,
        updated_at=row.updated_at,
        members=members,
    )


async def _name_taken(
    session: AsyncSession, name: str, other_than: uuid.UUID | None = None
) -> bool:
    statement = select(segments.c.id).where(segments.c.name == name)
    if other_than is not None:
        statement = statement.where(segments.c.id != other_than)
    return (await session.execute(statement)).first() is not None


async def _count(session: AsyncSession, segment_id: uuid.UUID) -> int:
    return int(
        (
            await session.execute(
                select(func.count()).where(segment_members.c.segment_id == segment_id)
            )
        ).scalar_one()
    )


async def create_segment(
    session: AsyncSession, *, name: str, rule: str, description: str | None, now: datetime
) -> Segment:
    """Save a segment (its rule already checked) and fill it; NameTaken on a duplicate."""
    segment_rules.parse(rule)
    if await _name_taken(session, name):
        raise NameTaken(name)
    segment_id = uuid.uuid4()
    row = (
        await session.execute(
            insert(segments)
            .values(
                id=segment_id,
                name=name,
                rule=rule,
                description=description,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["name"])
            .returning(segments)
        )
    ).first()
    if row is None:  # a concurrent save of the same name won the race
        raise NameTaken(name)
    entered, _ = await evaluate_segment(session, segment_id, name, rule, now=now)
    return _segment(row, entered)


async def update_segment(
    session: AsyncSession,
    segment_id: uuid.UUID,
    *,
    name: str,
    rule: str,
    description: str | None,
    now: datetime,
) -> Segment | None:
    """Replace a segment; a changed rule re-evaluates it. None when there is no such segment."""
    segment_rules.parse(rule)
    old = (
        await session.execute(select(segments).where(segments.c.id == segment_id).with_for_update())
    ).first()
    if old is None:
        return None
    if name != old.name and await _name_taken(session, name, other_than=segment_id):
        raise NameTaken(name)
    row = (
        await session.execute(
            segments.update()
            .where(segments.c.id == segment_id)
            .values(name=name, rule=rule, description=description, updated_at=now)
            .returning(segments)
        )
    ).one()
    if rule != old.rule:
        await evaluate_segment(session, segment_id, name, rule, now=now)
    return _segment(row, await _count(session, segment_id))


async def delete_segment(session: AsyncSession, segment_id: uuid.UUID, *, now: datetime) -> bool:
    """Delete a segment; its members exit it (with events). False when there is none."""
    row = (
        await session.execute(
            segments.delete().where(segments.c.id == segment_id).returning(segments.c.name)
        )
    ).first()
    if row is None:
        return False
    removed = await session.execute(
        segment_members.delete()
        .where(segment_members.c.segment_id == segment_id)
        .returning(segment_members.c.segment_id, segment_members.c.customer_id)
    )
    await _publish(session, _exited(removed, {segment_id: row.name}, now))
    return True


async def get_segment(session: AsyncSession, segment_id: uuid.UUID) -> Segment | None:
    """One segment with its member count."""
    row = (await session.execute(select(segments).where(segments.c.id == segment_id))).first()
    return None if row is None else _segment(row, await _count(session, segment_id))


async def segment_exists(session: AsyncSession, segment_id: uuid.UUID) -> bool:
    """Whether the segment exists (without counting its members)."""
    found = await session.execute(select(segments.c.id).where(segments.c.id == segment_id))
    return found.first() is not None


async def list_segments(
    session: AsyncSession, *, after: tuple[str, uuid.UUID] | None, limit: int
) -> list[Segment]:
    """Segments by name (then id), from after the (name, id) of the previous page."""
    counts = (
        select(func.count())
        .where(segment_members.c.segment_id == segments.c.id)
        .correlate(segments)
        .scalar_subquery()
    )
    statement = select(segments, counts.label("members"))
    if after is not None:
        statement = statement.where(tuple_(segments.c.name, segments.c.id) > after)
    rows = await session.execute(statement.order_by(segments.c.name, segments.c.id).limit(limit))
    return [_segment(row, int(row.members)) for row in rows]


async def list_members(
    session: AsyncSession, segment_id: uuid.UUID, *, after: uuid.UUID | None, limit: int
) -> list[Member]:
    """A segment's members by customer id (the primary key's order), after `after`."""
    statement = select(segment_members.c.customer_id, segment_members.c.entered_at).where(
        segment_members.c.segment_id == segment_id
    )
    if after is not None:
        statement = statement.where(segment_members.c.customer_id > after)
    rows = await session.execute(statement.order_by(segment_members.c.customer_id).limit(limit))
    return [Member(row.customer_id, row.entered_at) for row in rows]
