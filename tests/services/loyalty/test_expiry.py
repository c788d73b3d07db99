"""Points expiry: expiry dates, the expiry job at the clock's edges, reminders sent once."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.loyalty import expiry, ledger
from services.loyalty.models import ledger as ledger_table
from services.loyalty.models import lots
from shared.settings import Settings

T = datetime(2027, 3, 10, 12, 0, tzinfo=UTC)


async def earn(
    sessions: async_sessionmaker[AsyncSession],
    customer: uuid.UUID,
    points: int,
    expires_at: datetime | None,
) -> int:
    """A credit with its own lot (what a purchase does); the lot id."""
    async with sessions() as session, session.begin():
        await ledger.lock_member(session, customer, T - timedelta(days=365))
        entry = await ledger.credit(
            session,
            customer,
            kind="earn",
            points=points,
            reference=f"purchase:{uuid.uuid4()}",
            now=T - timedelta(days=365),
            expires_at=expires_at,
        )
        assert entry is not None
        [lot_id] = await ledger.lots_of_entry(session, entry)
        return lot_id


async def held(sessions: async_sessionmaker[AsyncSession], customer: uuid.UUID) -> int:
    async with sessions() as session:
        return (await ledger.balances(session, customer, T)).balance


async def events_of(
    sessions: async_sessionmaker[AsyncSession], kind: str, customer: uuid.UUID
) -> list[dict[str, Any]]:
    async with sessions() as session:
        rows = await session.execute(
            text(
                "SELECT payload FROM loyalty.outbox WHERE event_type = :t AND key = :k ORDER BY id"
            ),
            {"t": kind, "k": str(customer)},
        )
        return [json.loads(payload)["data"] for (payload,) in rows]


async def books_balance(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        rows = await session.execute(
            text(
                "SELECT m.balance, m.debt,"
                " (SELECT coalesce(sum(points), 0) FROM loyalty.ledger l"
                "  WHERE l.customer_id = m.customer_id),"
                " (SELECT coalesce(sum(remaining), 0) FROM loyalty.lots o"
                "  WHERE o.customer_id = m.customer_id)"
                " FROM loyalty.members m"
            )
        )
        for balance, debt, ledger_sum, remaining in rows:
            assert balance == ledger_sum == remaining - debt


def test_expiry_dates() -> None:
    earned = datetime(2026, 1, 31, 9, 30, tzinfo=UTC)
    assert expiry.expiry_for(earned, 0) is None
    assert expiry.expiry_for(earned, 1) == datetime(2026, 2, 28, 9, 30, tzinfo=UTC)
    # Period end: local (Kuala Lumpur, UTC+8) midnight that starts the next month.
    assert expiry.expiry_for(earned, 12, at_period_end=True) == datetime(
        2027, 1, 31, 16, 0, tzinfo=UTC
    )
    late = datetime(2026, 1, 31, 17, 0, tzinfo=UTC)  # already 1 February in Kuala Lumpur
    assert expiry.expiry_for(late, 1, at_period_end=True) == datetime(
        2026, 3, 31, 16, 0, tzinfo=UTC
    )
    assert expiry.expiry_for(late, 1, at_period_end=True, time_zone="UTC") == datetime(
        2026, 3, 1, tzinfo=UTC
    )
    december = datetime(2026, 12, 5, tzinfo=UTC)
    assert expiry.expiry_for(december, 12, at_period_end=True) == datetime(
        2027, 12, 31, 16, 0, tzinfo=UTC
    )


async def test_lots_expire_at_their_moment_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    customer, other = uuid.uuid4(), uuid.uuid4()
    due_now = await earn(sessions, customer, 100, T)
    next_second = await earn(sessions, customer, 40, T + timedelta(seconds=1))
    await earn(sessions, customer, 7, None)
    await earn(sessions, other, 5, T - timedelta(days=1))
    async with sessions() as session, session.begin():
        await ledger.lock_member(session, customer, T)
        await ledger.debit(
            session,
            customer,
            kind="adjust",
            points=30,
            reference=None,
            now=T - timedelta(days=1),
            available_only=True,
            allow_debt=False,
        )  # spends 30 of the oldest lot: 70 of it is left to expire
    assert await held(sessions, customer) == 117

    assert await expiry.expire_points(sessions, T - timedelta(seconds=1)) == 1, "other only"
    assert await expiry.expire_points(sessions, T) == 1
    assert await held(sessions, customer) == 47
    assert await expiry.expire_points(sessions, T) == 0, "a rerun expires nothing"
    assert await expiry.expire_points(sessions, T + timedelta(seconds=1)) == 1
    assert await held(sessions, customer) == 7
    assert await held(sessions, other) == 0

    expired = await events_of(sessions, "points.expired", customer)
    assert [(e["points"], e["balance"]) for e in expired] == [(70, 47), (40, 7)]
    async with sessions() as session:
        references = (
            await session.execute(
                select(ledger_table.c.reference, ledger_table.c.points)
                .where(ledger_table.c.customer_id == customer, ledger_table.c.kind == "expire")
                .order_by(ledger_table.c.id)
            )
        ).all()
        remaining = (
            await session.execute(
                select(lots.c.remaining).where(lots.c.id.in_([due_now, next_second]))
            )
        ).scalars()
    assert [tuple(r) for r in references] == [
        (f"expire:{due_now}", -70),
        (f"expire:{next_second}", -40),
    ]
    assert set(remaining) == {0}
    await books_balance(sessions)


async def test_points_put_back_into_an_expired_lot_expire_again(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    customer = uuid.uuid4()
    lot_id = await earn(sessions, customer, 10, T)
    assert await expiry.expire_points(sessions, T) == 1
    async with sessions() as session, session.begin():
        # What releasing a reservation does: points go back into the lot they came from.
        await session.execute(
            text("UPDATE loyalty.lots SET remaining = remaining + 4 WHERE id = :id;").bindparams(
                id=lot_id
            )
        )
        await session.execute(
            text(
                "UPDATE loyalty.members SET balance = balance + 4 WHERE customer_id = :c"
            ).bindparams(c=customer)
        )
        await session.execute(
            text(
                "INSERT INTO loyalty.ledger (customer_id, kind, points, created_at)"
                " VALUES (:c, 'redeem_release', 4, :t)"
            ).bindparams(c=customer, t=T)
        )
    assert await expiry.expire_points(sessions, T + timedelta(hours=1)) == 1
    assert await held(sessions, customer) == 0
    await books_balance(sessions)


async def test_reminders_go_out_once_per_lot(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    customer = uuid.uuid4()
    await earn(sessions, customer, 1, T)  # expiring now: the expiry job's, not a reminder
    soon = await earn(sessions, customer, 20, T + timedelta(days=13))
    edge = await earn(sessions, customer, 30, T + expiry.NOTICE_WINDOW)
    later = await earn(sessions, customer, 50, T + expiry.NOTICE_WINDOW + timedelta(seconds=1))
    assert await expiry.warn_expiring(sessions, T) == 2
    assert await expiry.warn_expiring(sessions, T) == 0, "each lot is announced once"
    assert await expiry.warn_expiring(sessions, T + timedelta(seconds=1)) == 1
    warnings = await events_of(sessions, "points.expiring", customer)
    assert [(w["points"], datetime.fromisoformat(w["expires_at"])) for w in warnings] == [
        (50, T + timedelta(days=13)),
        (50, T + expiry.NOTICE_WINDOW + timedelta(seconds=1)),
    ]
    async with sessions() as session:
        noticed = set(
            (await session.execute(text("SELECT lot_id FROM loyalty.expiry_notices"))).scalars()
        )
    assert noticed == {soon, edge, later}


async def test_the_scheduled_jobs_use_the_clock(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    customer = uuid.uuid4()
    now = datetime.now(UTC)
    await earn(sessions, customer, 10, now - timedelta(minutes=1))
    await earn(sessions, customer, 20, now + timedelta(days=1))
    assert await expiry.warn_expiring_points(sessions, settings) == 1
    assert await expiry.expire_due_points(sessions, settings) == 1
    assert await held(sessions, customer) == 20
