"""`purchase.completed` events applied a run at a time, with the result of one at a time.

`purchases.record_purchase` spends about seven statements on a purchase; a consumer that
calls it per event tops out at a few hundred purchases a second. This handler reads and
writes a whole run of events set-wise:

1. the survivors of merged members, the purchases already recorded (by id, or by store
   and order id) and the members' rows, each in one statement, the members locked in
   customer order;
2. then *waves*: wave k holds every customer's k-th new purchase of the run, so within a
   wave no customer appears twice and each purchase sees the tier, debt and earlier
   purchases its predecessors left, exactly as if applied one by one. A wave costs one
   insert of purchases, one ledger statement (`ledger_batch`), one outbox insert, and
   when configured one statement for the per-day cap's sums, up to three for stamp cards
   (`stamp_batch`) and one to three for tiers (`tier_batch`).

Both paths share their rules with `purchases` (points, rows, timing, events), and a test
applies random runs both ways and compares every table.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Uuid, any_, bindparam, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from services.loyalty import txcache
from services.loyalty.earning import points_for
from services.loyalty.ledger_batch import Credit, credit_many
from services.loyalty.models import SCHEMA, members
from services.loyalty.purchases import (
    SOURCE,
    Policy,
    earn_reference,
    earn_timing,
    earning_rules_at,
    facts_of,
    local_day,
    points_earned,
    purchase_row,
    stamp_definitions,
    tier_ladder,
)
from services.loyalty.stamp_batch import stamp_wave
from services.loyalty.tier_batch import upgrade_wave
from shared.db.merges import MAX_HOPS, MERGED
from shared.events.envelope import Event
from shared.events.purchases import PurchaseCompleted
from shared.pipeline.consumer import BatchHandler, Run
from shared.pipeline.outbox import add_events


@dataclass
class _Member:
    """What the run needs of a locked member, kept current as purchases apply."""

    tier: str | None
    balance: int
    debt: int


@dataclass(frozen=True)
class _Pending:
    purchase: PurchaseCompleted
    origin: str


_IDS = bindparam("ids", type_=ARRAY(Uuid()))
_MERGED_INTO = select(members.c.customer_id, members.c.merged_into).where(
    members.c.customer_id == any_(_IDS), members.c.status == MERGED
)
_LOCK_MEMBERS = (
    select(members.c.customer_id, members.c.tier, members.c.balance, members.c.debt)
    .where(members.c.customer_id == any_(_IDS))
    .order_by(members.c.customer_id)
    .with_for_update()
)
_NEW_MEMBERS = text(
    f"""
    INSERT INTO "{SCHEMA}".members (customer_id, status, balance, debt, updated_at)
    SELECT id, 'active', 0, 0, CAST(:now AS timestamptz)
    FROM unnest(CAST(:ids AS uuid[])) AS id
    ORDER BY id
    ON CONFLICT DO NOTHING
    RETURNING customer_id, tier, balance, debt
    """
)
_RECORDED = text(
    f"""
    SELECT p.id, p.store_id, p.order_id
    FROM "{SCHEMA}".purchases AS p
    WHERE p.id = ANY(CAST(:ids AS uuid[]))
    UNION
    SELECT p.id, p.store_id, p.order_id
    FROM "{SCHEMA}".purchases AS p
    JOIN unnest(CAST(:stores AS text[]), CAST(:orders AS text[])) AS k(store_id, order_id)
      ON p.store_id = k.store_id AND p.order_id = k.order_id
    """
)
_EARNED_ON_DAYS = text(
    f"""
    SELECT i.position, coalesce(sum(p.points), 0)
    FROM unnest(
        CAST(:customer_ids AS uuid[]), CAST(:starts AS timestamptz[]),
        CAST(:ends AS timestamptz[])
    ) WITH ORDINALITY AS i(customer_id, day_start, day_end, position)
    LEFT JOIN "{SCHEMA}".purchases AS p
      ON p.customer_id = i.customer_id
     AND p.purchased_at >= i.day_start AND p.purchased_at < i.day_end
    GROUP BY i.position
    """
)
# Arrays rather than a many-row VALUES list: asyncpg encodes them in C, which keeps
# SQLAlchemy's per-row parameter handling off the consumer's hot path.
_PURCHASE_COLUMNS = {
    "id": "uuid",
    "customer_id": "uuid",
    "store_id": "text",
    "order_id": "text",
    "currency": "text",
    "total_minor": "bigint",
    "refunded_minor": "bigint",
    "lines": "jsonb",
    "channel": "text",
    "purchased_at": "timestamptz",
    "points": "bigint",
    "points_reversed": "bigint",
    "rule_version": "integer",
    "origin": "text",
    "created_at": "timestamptz",
}
_INSERT_PURCHASES = text(
    f"""
    INSERT INTO "{SCHEMA}".purchases ({", ".join(_PURCHASE_COLUMNS)})
    SELECT {", ".join(f"CAST(u.{name} AS {kind})" for name, kind in _PURCHASE_COLUMNS.items())}
    FROM unnest({
        ", ".join(
            f"CAST(:{name} AS {'text' if kind == 'jsonb' else kind}[])"
            for name, kind in _PURCHASE_COLUMNS.items()
        )
    }) WITH ORDINALITY AS u({", ".join(_PURCHASE_COLUMNS)}, position)
    ORDER BY u.position
    ON CONFLICT DO NOTHING
    RETURNING id
    """
)


def batch_applier(policy: Policy) -> BatchHandler:
    """The batch handler of `purchase.completed` under the deployment's policy."""

    async def apply(session: AsyncSession, run: Run) -> None:
        pending = [
            _Pending(event, f"event:{envelope.source}")
            for event, envelope in run
            if isinstance(event, PurchaseCompleted)
        ]
        await apply_purchases(session, pending, policy, now=datetime.now(UTC))

    return BatchHandler(apply)


async def apply_purchases(
    session: AsyncSession, pending: Sequence[_Pending], policy: Policy, *, now: datetime
) -> None:
    """Record and credit the purchases of `pending` not recorded yet, in their order."""
    if not pending:
        return
    survivor = await _survivors(session, {p.purchase.customer_id for p in pending})
    pending = [
        p
        if survivor[p.purchase.customer_id] == p.purchase.customer_id
        else _Pending(
            p.purchase.model_copy(update={"customer_id": survivor[p.purchase.customer_id]}),
            p.origin,
        )
        for p in pending
    ]
    fresh = await _unrecorded(session, pending)
    if not fresh:
        return
    state = await _lock_members(session, sorted({p.purchase.customer_id for p in fresh}), now)
    for wave in _waves(fresh):
        await _apply_wave(session, wave, state, policy, now)


def _waves(fresh: Sequence[_Pending]) -> list[list[_Pending]]:
    """Wave k: each customer's k-th purchase, in run order."""
    waves: list[list[_Pending]] = []
    seen: dict[uuid.UUID, int] = {}
    for item in fresh:
        index = seen.get(item.purchase.customer_id, 0)
        seen[item.purchase.customer_id] = index + 1
        if index == len(waves):
            waves.append([])
        waves[index].append(item)
    return waves


async def _survivors(
    session: AsyncSession, customer_ids: set[uuid.UUID]
) -> dict[uuid.UUID, uuid.UUID]:
    """Each id's survivor (itself unless merged away), following chains of merges."""
    current = {customer_id: customer_id for customer_id in customer_ids}
    for _ in range(MAX_HOPS):
        rows = await session.execute(_MERGED_INTO, {"ids": sorted(set(current.values()))})
        moves = {row.customer_id: row.merged_into for row in rows if row.merged_into is not None}
        if not moves:
            break
        current = {origin: moves.get(now, now) for origin, now in current.items()}
    return current


async def _unrecorded(session: AsyncSession, pending: Sequence[_Pending]) -> list[_Pending]:
    """`pending` without purchases already stored, or repeated earlier in the run."""
    rows = await session.execute(
        _RECORDED,
        {
            "ids": [p.purchase.purchase_id for p in pending],
            "stores": [p.purchase.store_id or "" for p in pending],
            "orders": [p.purchase.order_id for p in pending],
        },
    )
    ids: set[uuid.UUID] = set()
    orders: set[tuple[str, str]] = set()
    for row in rows:
        ids.add(row.id)
        orders.add((row.store_id, row.order_id))
    fresh: list[_Pending] = []
    for item in pending:
        order = (item.purchase.store_id or "", item.purchase.order_id)
        if item.purchase.purchase_id in ids or order in orders:
            continue
        ids.add(item.purchase.purchase_id)
        orders.add(order)
        fresh.append(item)
    return fresh


async def _lock_members(
    session: AsyncSession, customer_ids: list[uuid.UUID], now: datetime
) -> dict[uuid.UUID, _Member]:
    """Lock (creating where unknown) the members, in customer order as `lock_member` would."""
    state: dict[uuid.UUID, _Member] = {}

    def keep(rows: Any) -> None:
        for row in rows:
            state[row.customer_id] = _Member(row.tier, int(row.balance), int(row.debt))

    keep(await session.execute(_LOCK_MEMBERS, {"ids": customer_ids}))
    missing = [customer_id for customer_id in customer_ids if customer_id not in state]
    if missing:
        # Rows this transaction inserts are locked by it until the end.
        keep(await session.execute(_NEW_MEMBERS, {"ids": missing, "now": now}))
        raced = [customer_id for customer_id in missing if customer_id not in state]
        if raced:  # created by another transaction meanwhile
            keep(await session.execute(_LOCK_MEMBERS, {"ids": raced}))
    return state


async def _earned_on_days(
    session: AsyncSession, days: Sequence[tuple[uuid.UUID, datetime, datetime]]
) -> list[int]:
    """Points earned by each (customer, day start, day end), in the order given."""
    if not days:
        return []
    rows = await session.execute(
        _EARNED_ON_DAYS,
        {
            "customer_ids": [day[0] for day in days],
            "starts": [day[1] for day in days],
            "ends": [day[2] for day in days],
        },
    )
    totals = {int(position): int(total) for position, total in rows}
    return [totals[position] for position in range(1, len(days) + 1)]


@dataclass(frozen=True)
class _Recorded:
    """A purchase this wave stored, with its points and their timing."""

    purchase: PurchaseCompleted
    points: int
    timing: tuple[datetime, datetime | None]


async def _apply_wave(
    session: AsyncSession,
    wave: Sequence[_Pending],
    state: dict[uuid.UUID, _Member],
    policy: Policy,
    now: datetime,
) -> None:
    """Apply purchases of distinct customers, each after its customer's earlier ones."""
    memo = txcache.memo(session)
    rows = await _priced_rows(session, wave, state, memo, now)
    columns = {
        name: [json.dumps(row[name]) if name == "lines" else row[name] for row in rows]
        for name in _PURCHASE_COLUMNS
    }
    inserted = {purchase_id for (purchase_id,) in await session.execute(_INSERT_PURCHASES, columns)}
    # A purchase not inserted was recorded by a concurrent transaction, which credits it.
    recorded = [
        _Recorded(item.purchase, int(row["points"]), earn_timing(item.purchase, policy))
        for item, row in zip(wave, rows, strict=True)
        if item.purchase.purchase_id in inserted
    ]
    await _credit(session, recorded, state, now)
    stamped = await stamp_wave(
        session, [r.purchase for r in recorded], await stamp_definitions(session, memo), now
    )
    upgraded = await upgrade_wave(
        session,
        [(r.purchase.customer_id, state[r.purchase.customer_id].tier) for r in recorded],
        await tier_ladder(session, memo),
        now,
    )
    # Per purchase, in the order `record_purchase` publishes them.
    published: list[Event] = []
    for r in recorded:
        member = state[r.purchase.customer_id]
        published.extend(stamped.get(r.purchase.purchase_id, []))
        change = upgraded.get(r.purchase.customer_id)
        if change is not None:
            member.tier = change.tier
            published.append(change)
        if r.points:
            published.append(points_earned(r.purchase, r.points, r.timing, member.balance, now))
    if published:
        await add_events(session, SCHEMA, published, source=SOURCE)


async def _priced_rows(
    session: AsyncSession,
    wave: Sequence[_Pending],
    state: dict[uuid.UUID, _Member],
    memo: dict[str, Any],
    now: datetime,
) -> list[dict[str, Any]]:
    """The `purchases` rows of the wave, points worked out under the rules in force."""
    priced = [
        (item, *await earning_rules_at(session, memo, item.purchase.purchased_at)) for item in wave
    ]
    capped = [index for index, (_, _, rules) in enumerate(priced) if rules.per_day_cap is not None]
    earned_today = dict.fromkeys(range(len(priced)), 0)
    if capped:
        days = [
            (
                priced[index][0].purchase.customer_id,
                *local_day(priced[index][0].purchase.purchased_at, priced[index][2].time_zone),
            )
            for index in capped
        ]
        earned_today.update(zip(capped, await _earned_on_days(session, days), strict=True))
    rows = []
    for index, (item, version, rules) in enumerate(priced):
        purchase = item.purchase
        points = points_for(
            facts_of(purchase),
            rules,
            tier=state[purchase.customer_id].tier,
            earned_today=earned_today[index],
        )
        rows.append(purchase_row(purchase, points, version, item.origin, now))
    return rows


async def _credit(
    session: AsyncSession,
    recorded: Sequence[_Recorded],
    state: dict[uuid.UUID, _Member],
    now: datetime,
) -> None:
    """Credit the points, repaying each member's debt first, as `ledger.credit` does."""
    credits = [
        Credit(
            r.purchase.customer_id,
            r.points,
            min(state[r.purchase.customer_id].debt, r.points),
            earn_reference(r.purchase.purchase_id),
            *r.timing,
        )
        for r in recorded
    ]
    written = await credit_many(session, credits, kind="earn", now=now)
    for credit in credits:
        if credit.reference in written:
            member = state[credit.customer_id]
            member.debt -= credit.repaid
            member.balance += credit.points
