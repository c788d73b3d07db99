"""The rewards catalogue and redemptions: reserve points, then confirm or release them.

A redemption reserves points at the till, for a catalogue reward or as payment, and hands
back a voucher code. The points leave the balance at once (a `redeem` ledger entry), so
no later request can spend them again; the sale completing confirms the redemption, a
cancel releases it, and a reservation left alone past `RESERVATION_TIMEOUT` is expired by
`services.loyalty.redemption_jobs`.

Concurrency: every change locks the member's row first (`ledger.lock_member`), then the
redemption, then the reward; one order everywhere, so no deadlocks. Stock is taken by a
conditional `UPDATE ... WHERE stock > 0`, which PostgreSQL applies one writer at a time.

Giving points back: a release credits a `redeem_release` entry that opens a new lot,
available at once and expiring at the earliest expiry among the lots the redeem consumed
(from `lot_consumptions`). It goes through `ledger.credit`, so it repays debt first and
keeps the ledger invariants; the one approximation is that points taken from several
lots come back with the soonest of their expiries, never a later one.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, and_, any_, func, literal, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from services.loyalty import ledger
from services.loyalty.models import (
    SCHEMA,
    lot_consumptions,
    lots,
    members,
    redemptions,
    rewards,
)
from shared.events.loyalty import PointsRedeemed, RewardIssued
from shared.pipeline.outbox import add_event

SOURCE = "loyalty"
RESERVATION_TIMEOUT = timedelta(minutes=15)
VOUCHER_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # no 0/O, 1/I
VOUCHER_LENGTH = 10
HOLDING = ("reserved", "confirmed")  # the statuses that count against a per-member limit


class RedemptionRefused(Exception):
    """A request the rules refuse; `status` and `kind` become the problem document."""

    def __init__(self, status: int, kind: str, title: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.title = title
        self.detail = detail
        self.extra = extra


@dataclass(frozen=True)
class Reward:
    """A catalogue entry."""

    id: uuid.UUID
    name: str
    description: str | None
    points_cost: int
    valid_days: int
    stock: int | None
    per_member_limit: int | None
    tiers: list[str] | None
    active: bool
    created_at: datetime


@dataclass(frozen=True)
class Redemption:
    """A reservation of points and where it stands."""

    id: uuid.UUID
    customer_id: uuid.UUID
    kind: str
    reward_id: uuid.UUID | None
    points: int
    amount_minor: int | None
    currency: str | None
    voucher_code: str
    status: str
    store_id: str | None
    order_ref: str | None
    ledger_entry_id: int | None
    reserved_until: datetime | None
    valid_until: datetime | None
    created_at: datetime
    settled_at: datetime | None


def _reward(row: Row[Any]) -> Reward:
    return Reward(
        id=row.id,
        name=row.name,
        description=row.description,
        points_cost=int(row.points_cost),
        valid_days=int(row.valid_days),
        stock=None if row.stock is None else int(row.stock),
        per_member_limit=row.per_member_limit,
        tiers=None if row.tiers is None else list(row.tiers),
        active=bool(row.active),
        created_at=row.created_at,
    )


def _redemption(row: Row[Any]) -> Redemption:
    return Redemption(
        **{name: getattr(row, name) for name in Redemption.__dataclass_fields__},
    )


def new_voucher_code() -> str:
    """A random code from an alphabet without look-alike characters."""
    return "".join(secrets.choice(VOUCHER_ALPHABET) for _ in range(VOUCHER_LENGTH))


def normalise_voucher_code(code: str) -> str:
    """What a cashier types (any case, spaces, dashes) as the stored code."""
    return code.replace("-", "").replace(" ", "").upper()


# --- catalogue ------------------------------------------------------------------------


async def create_reward(session: AsyncSession, values: dict[str, Any], now: datetime) -> Reward:
    """Add a reward to the catalogue."""
    row = (
        await session.execute(
            insert(rewards).values(id=uuid.uuid4(), created_at=now, **values).returning(*rewards.c)
        )
    ).one()
    return _reward(row)


async def get_reward(session: AsyncSession, reward_id: uuid.UUID) -> Reward | None:
    """One reward, or None."""
    row = (await session.execute(select(rewards).where(rewards.c.id == reward_id))).one_or_none()
    return None if row is None else _reward(row)


async def list_rewards(
    session: AsyncSession, *, active: bool | None, after: uuid.UUID | None, limit: int
) -> list[Reward]:
    """Rewards by id (the cursor is the last id of the previous page)."""
    statement = select(rewards).order_by(rewards.c.id).limit(limit)
    if active is not None:
        statement = statement.where(rewards.c.active == active)
    if after is not None:
        statement = statement.where(rewards.c.id > after)
    return [_reward(row) for row in await session.execute(statement)]


async def update_reward(
    session: AsyncSession, reward_id: uuid.UUID, values: dict[str, Any]
) -> Reward | None:
    """Change some fields of a reward; None when there is no such reward."""
    statement = update(rewards).where(rewards.c.id == reward_id).returning(*rewards.c)
    if not values:
        return await get_reward(session, reward_id)
    row = (await session.execute(statement.values(**values))).one_or_none()
    return None if row is None else _reward(row)


def _holding(customer_id: uuid.UUID, reward_id: Any) -> Any:
    """How many of a reward the member holds (reserved or confirmed), as a subquery."""
    return (
        select(func.count())
        .select_from(redemptions)
        .where(
            redemptions.c.customer_id == customer_id,
            redemptions.c.reward_id == reward_id,
            redemptions.c.status.in_(HOLDING),
        )
        .scalar_subquery()
    )


async def affordable_rewards(
    session: AsyncSession,
    customer_id: uuid.UUID,
    tier: str | None,
    available: int,
    now: datetime,
) -> list[Reward]:
    """Active rewards the member could redeem now: cost within `available`, their tier,
    in stock and under the per-member limit; cheapest first.

    `now` is taken for symmetry with the other queries (rewards have no validity window yet).
    """
    del now
    tier_ok: ColumnElement[bool] = rewards.c.tiers.is_(None)
    if tier is not None:
        tier_ok = or_(tier_ok, literal(tier) == any_(rewards.c.tiers))
    rows = await session.execute(
        select(rewards)
        .where(
            rewards.c.active.is_(True),
            rewards.c.points_cost <= available,
            tier_ok,
            or_(rewards.c.stock.is_(None), rewards.c.stock > 0),
            or_(
                rewards.c.per_member_limit.is_(None),
                _holding(customer_id, rewards.c.id) < rewards.c.per_member_limit,
            ),
        )
        .order_by(rewards.c.points_cost, rewards.c.name, rewards.c.id)
    )
    return [_reward(row) for row in rows]


# --- redemptions ----------------------------------------------------------------------


async def get_redemption(
    session: AsyncSession, *, redemption_id: uuid.UUID | None = None, voucher: str | None = None
) -> Redemption | None:
    """A redemption by id or by voucher code."""
    if redemption_id is not None:
        condition = redemptions.c.id == redemption_id
    else:
        condition = redemptions.c.voucher_code == normalise_voucher_code(voucher or "")
    row = (await session.execute(select(redemptions).where(condition))).one_or_none()
    return None if row is None else _redemption(row)


async def member_redemptions(
    session: AsyncSession,
    customer_id: uuid.UUID,
    *,
    status: str | None,
    before: uuid.UUID | None,
    limit: int,
) -> list[Redemption]:
    """A member's redemptions, newest first (by `created_at`, then id).

    `before` is the id of the last redemption of the previous page; the page holds the
    redemptions that come after it in this order. Raises `RedemptionRefused` for an
    unknown member (404) or a cursor that is not one of the member's redemptions (400).
    """
    known = (
        await session.execute(
            select(members.c.customer_id).where(members.c.customer_id == customer_id)
        )
    ).scalar_one_or_none()
    if known is None:
        raise RedemptionRefused(
            404, "member-not-found", "Member not found", f"No member {customer_id}."
        )
    statement = select(redemptions).where(redemptions.c.customer_id == customer_id)
    if status is not None:
        statement = statement.where(redemptions.c.status == status)
    if before is not None:
        cursor = (
            await session.execute(
                select(redemptions.c.created_at, redemptions.c.id).where(
                    redemptions.c.id == before, redemptions.c.customer_id == customer_id
                )
            )
        ).one_or_none()
        if cursor is None:
            raise RedemptionRefused(
                400,
                "invalid-cursor",
                "Invalid cursor",
                f"{before} is not a redemption of member {customer_id}.",
            )
        statement = statement.where(
            or_(
                redemptions.c.created_at < cursor.created_at,
                and_(
                    redemptions.c.created_at == cursor.created_at,
                    redemptions.c.id < cursor.id,
                ),
            )
        )
    rows = await session.execute(
        statement.order_by(redemptions.c.created_at.desc(), redemptions.c.id.desc()).limit(limit)
    )
    return [_redemption(row) for row in rows]


async def _lock_existing_member(
    session: AsyncSession, customer_id: uuid.UUID, now: datetime
) -> Row[Any]:
    exists = (
        await session.execute(select(members.c.status).where(members.c.customer_id == customer_id))
    ).scalar_one_or_none()
    if exists is None:
        raise RedemptionRefused(
            404, "member-not-found", "Member not found", f"No member {customer_id}."
        )
    return await ledger.lock_member(session, customer_id, now)


async def _balance(session: AsyncSession, customer_id: uuid.UUID) -> int:
    return int(
        (
            await session.execute(
                select(members.c.balance).where(members.c.customer_id == customer_id)
            )
        ).scalar_one()
    )


async def reserve(
    session: AsyncSession,
    *,
    customer_id: uuid.UUID,
    reward_id: uuid.UUID | None,
    points: int | None,
    amount_minor: int | None,
    currency: str | None,
    store_id: str | None,
    order_ref: str | None,
    now: datetime,
) -> Redemption:
    """Reserve points for a reward (`reward_id`) or as payment (`points`): debit them now.

    Raises `RedemptionRefused` (and writes nothing, once the caller rolls back) when the
    member is unknown, the reward unknown, inactive, out of stock, not for the member's
    tier or over the per-member limit, or the member's available points fall short.
    """
    member = await _lock_existing_member(session, customer_id, now)
    if member.status != "active":
        raise RedemptionRefused(
            409, "member-inactive", "Member inactive", f"Member {customer_id} is {member.status}."
        )
    reward: Reward | None = None
    if reward_id is not None:
        reward = await get_reward(session, reward_id)
        if reward is None:
            raise RedemptionRefused(
                404, "reward-not-found", "Reward not found", f"No reward {reward_id}."
            )
        if not reward.active:
            raise RedemptionRefused(
                409, "reward-inactive", "Reward inactive", f"{reward.name} is not offered."
            )
        if reward.tiers is not None and member.tier not in reward.tiers:
            raise RedemptionRefused(
                409,
                "tier-not-eligible",
                "Tier not eligible",
                f"{reward.name} is for the tiers {', '.join(reward.tiers)}.",
                tier=member.tier,
            )
        if reward.per_member_limit is not None:
            held = (await session.execute(select(_holding(customer_id, reward.id)))).scalar_one()
            if held >= reward.per_member_limit:
                raise RedemptionRefused(
                    409,
                    "limit-reached",
                    "Limit reached",
                    f"{reward.name} is limited to {reward.per_member_limit} per member.",
                )
        points = reward.points_cost
    assert points is not None and points > 0
    redemption_id = uuid.uuid4()
    try:
        entry = await ledger.debit(
            session,
            customer_id,
            kind="redeem",
            points=points,
            reference=f"redemption:{redemption_id}",
            now=now,
            available_only=True,
            allow_debt=False,
            reason=f"reward {reward.name}" if reward else "points as payment",
        )
    except ledger.InsufficientPoints as exc:
        raise RedemptionRefused(
            409,
            "insufficient-points",
            "Insufficient points",
            str(exc),
            available=exc.available,
            wanted=exc.wanted,
        ) from exc
    if reward is not None and reward.stock is not None:
        taken = (
            await session.execute(
                update(rewards)
                .where(rewards.c.id == reward.id, rewards.c.stock > 0)
                .values(stock=rewards.c.stock - 1)
                .returning(rewards.c.stock)
            )
        ).scalar_one_or_none()
        if taken is None:
            raise RedemptionRefused(
                409, "out-of-stock", "Out of stock", f"{reward.name} is out of stock."
            )
    row = None
    while row is None:  # a voucher code collision is astronomically rare; draw again
        row = (
            await session.execute(
                insert(redemptions)
                .values(
                    id=redemption_id,
                    customer_id=customer_id,
                    kind="reward" if reward else "payment",
                    reward_id=reward.id if reward else None,
                    points=points,
                    amount_minor=amount_minor,
                    currency=currency,
                    voucher_code=new_voucher_code(),
                    status="reserved",
                    store_id=store_id,
                    order_ref=order_ref,
                    ledger_entry_id=entry,
                    reserved_until=now + RESERVATION_TIMEOUT,
                    valid_until=now + timedelta(days=reward.valid_days) if reward else None,
                    created_at=now,
                )
                .on_conflict_do_nothing(index_elements=["voucher_code"])
                .returning(*redemptions.c)
            )
        ).one_or_none()
    redemption = _redemption(row)
    await _announce(session, redemption, "reserved", now)
    return redemption


async def _announce(
    session: AsyncSession, redemption: Redemption, status: str, now: datetime
) -> None:
    await add_event(
        session,
        SCHEMA,
        PointsRedeemed(
            customer_id=redemption.customer_id,
            redemption_id=redemption.id,
            points=redemption.points,
            status=status,
            reward_id=redemption.reward_id,
            voucher_code=redemption.voucher_code,
            balance=await _balance(session, redemption.customer_id),
            redeemed_at=now,
        ),
        source=SOURCE,
    )


async def _locked(session: AsyncSession, redemption_id: uuid.UUID, now: datetime) -> Redemption:
    """The redemption, with its member's row and then its own row locked."""
    found = await get_redemption(session, redemption_id=redemption_id)
    if found is None:
        raise RedemptionRefused(
            404, "redemption-not-found", "Redemption not found", f"No redemption {redemption_id}."
        )
    customer_id = found.customer_id
    while True:
        await ledger.lock_member(session, customer_id, now)
        row = (
            await session.execute(
                select(redemptions).where(redemptions.c.id == redemption_id).with_for_update()
            )
        ).one()
        if row.customer_id == customer_id:
            return _redemption(row)
        # A member merge moved it to the survivor meanwhile: lock that member instead.
        customer_id = row.customer_id


async def confirm(
    session: AsyncSession, redemption_id: uuid.UUID, *, order_ref: str | None, now: datetime
) -> Redemption:
    """The sale completed: the reservation becomes final (confirming twice changes nothing)."""
    redemption = await _locked(session, redemption_id, now)
    if redemption.status == "confirmed":
        return redemption
    if redemption.status != "reserved":
        raise RedemptionRefused(
            409,
            "redemption-settled",
            "Redemption already settled",
            f"Redemption {redemption_id} is {redemption.status}; its points went back.",
            redemption_status=redemption.status,
        )
    if redemption.reserved_until is not None and redemption.reserved_until <= now:
        raise RedemptionRefused(
            409,
            "reservation-expired",
            "Reservation expired",
            f"Redemption {redemption_id} was reserved until {redemption.reserved_until}.",
        )
    row = (
        await session.execute(
            update(redemptions)
            .where(redemptions.c.id == redemption_id)
            .values(
                status="confirmed",
                settled_at=now,
                order_ref=func.coalesce(order_ref, redemptions.c.order_ref),
            )
            .returning(*redemptions.c)
        )
    ).one()
    confirmed = _redemption(row)
    await _announce(session, confirmed, "confirmed", now)
    if confirmed.reward_id is not None:
        reward = await get_reward(session, confirmed.reward_id)
        await add_event(
            session,
            SCHEMA,
            RewardIssued(
                customer_id=confirmed.customer_id,
                voucher_code=confirmed.voucher_code,
                reward_id=confirmed.reward_id,
                description=reward.name if reward else "reward",
                valid_until=confirmed.valid_until,
                issued_at=now,
            ),
            source=SOURCE,
        )
    return confirmed


async def release(
    session: AsyncSession, redemption_id: uuid.UUID, *, now: datetime, expired: bool = False
) -> Redemption:
    """Cancel a reservation (or expire it): points and stock go back.

    Releasing a released or expired redemption again changes nothing; a confirmed one is
    refused. With `expired`, only a reservation past its `reserved_until` is touched.
    """
    redemption = await _locked(session, redemption_id, now)
    if redemption.status in ("released", "expired"):
        return redemption
    if redemption.status == "confirmed":
        raise RedemptionRefused(
            409,
            "redemption-confirmed",
            "Redemption confirmed",
            f"Redemption {redemption_id} was confirmed; refund the sale instead.",
        )
    if expired and (redemption.reserved_until is None or redemption.reserved_until > now):
        return redemption
    # The consumed lots were available; the points come back expiring no later than the
    # soonest of them.
    expires_at = (
        await session.execute(
            select(func.min(lots.c.expires_at))
            .select_from(lot_consumptions.join(lots, lots.c.id == lot_consumptions.c.lot_id))
            .where(lot_consumptions.c.ledger_id == redemption.ledger_entry_id)
        )
    ).scalar_one_or_none()
    await ledger.credit(
        session,
        redemption.customer_id,
        kind="redeem_release",
        points=redemption.points,
        reference=f"redemption:{redemption.id}",
        now=now,
        available_at=now,
        expires_at=expires_at,
        reason="reservation expired" if expired else "reservation released",
    )
    if redemption.reward_id is not None:
        await session.execute(
            update(rewards)
            .where(rewards.c.id == redemption.reward_id, rewards.c.stock.is_not(None))
            .values(stock=rewards.c.stock + 1)
        )
    row = (
        await session.execute(
            update(redemptions)
            .where(redemptions.c.id == redemption_id)
            .values(status="expired" if expired else "released", settled_at=now)
            .returning(*redemptions.c)
        )
    ).one()
    released = _redemption(row)
    await _announce(session, released, "released", now)
    return released


async def overdue_reservations(session: AsyncSession, now: datetime, limit: int) -> list[uuid.UUID]:
    """Ids of reservations past their `reserved_until`, oldest first."""
    rows = await session.execute(
        select(redemptions.c.id)
        .where(redemptions.c.status == "reserved", redemptions.c.reserved_until <= now)
        .order_by(redemptions.c.reserved_until)
        .limit(limit)
    )
    return [uuid.UUID(str(redemption_id)) for (redemption_id,) in rows]
