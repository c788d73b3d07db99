"""What the channels tell after sending: delivery, bounces, opens and clicks.

Four facts land on a send-ledger row after `sent`, each at most once:
* a **click** on a tracked link (`links.tracked_url`) sets `clicked_at` and publishes
  `message.clicked`;
* an **open** seen through the pixel (`links.open_pixel_url`) sets `opened_at` and
  publishes `message.opened`;
* a provider's **delivered** report turns `sent` into `delivered` with `delivered_at` and
  publishes `message.delivered`;
* a provider's **bounced** or **failed** report turns `sent` (or `delivered`: mail can
  bounce after the receiving server took it) into `failed` with `failed_at`, marks the
  channel undeliverable for a bounce, and publishes `message.failed` (`permanent`).

"At most once" holds under redelivered callbacks, double clicks and concurrent requests
because every change is one conditional `UPDATE ... RETURNING` (for example `WHERE
clicked_at IS NULL`): only the statement that changed the row publishes, in the same
transaction, through the outbox.

Opens and clicks are recorded whatever the row's status: a click proves the message
arrived even if a provider said otherwise. They are not inferred from each other.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from services.messaging.models import SCHEMA, recipients, sends
from shared.events.envelope import Event
from shared.events.messaging import MessageClicked, MessageDelivered, MessageFailed, MessageOpened
from shared.pipeline.outbox import add_event

_IDENTITY = (sends.c.id, sends.c.customer_id, sends.c.channel, sends.c.source)
"""What every message event names."""


class ProviderStatus(StrEnum):
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    FAILED = "failed"


class Change(StrEnum):
    """What a provider's report did to the ledger."""

    APPLIED = "applied"
    """The row changed and the event was published."""
    UNCHANGED = "unchanged"
    """Already recorded (a repeat), or the row is in a state the report cannot change."""
    TOO_EARLY = "too-early"
    """The send is not recorded as sent yet; the provider should report again later."""


@dataclass(frozen=True)
class StatusResult:
    change: Change
    send_id: uuid.UUID
    status: str


async def record_click(
    session: AsyncSession, send_id: uuid.UUID, url: str, *, now: datetime
) -> bool:
    """Record the first click on `send_id`; True when this one was the first."""
    row = await _first_time(session, send_id, sends.c.clicked_at, now)
    if row is None:
        return False
    await _publish(session, MessageClicked(**_names(row), url=url, clicked_at=now))
    return True


async def record_open(session: AsyncSession, send_id: uuid.UUID, *, now: datetime) -> bool:
    """Record the first opening of `send_id`; True when this one was the first."""
    row = await _first_time(session, send_id, sends.c.opened_at, now)
    if row is None:
        return False
    await _publish(session, MessageOpened(**_names(row), opened_at=now))
    return True


async def find_send(
    session: AsyncSession,
    channel: str,
    *,
    send_id: uuid.UUID | None,
    provider_message_id: str | None,
) -> RowMapping | None:
    """The ledger row a provider's report names, on `channel`; by send id when given."""
    query = sa.select(sends.c.id, sends.c.status).where(sends.c.channel == channel)
    if send_id is not None:
        query = query.where(sends.c.id == send_id)
    else:
        query = query.where(sends.c.provider_message_id == provider_message_id)
    return (await session.execute(query.limit(1))).mappings().first()


async def apply_status(
    session: AsyncSession,
    send_id: uuid.UUID,
    status: ProviderStatus,
    reason: str | None,
    *,
    now: datetime,
) -> StatusResult:
    """Apply a provider's delivered / bounced / failed report to one send, once."""
    if status is ProviderStatus.DELIVERED:
        changed = await _delivered(session, send_id, now)
    else:
        changed = await _failed(session, send_id, status, reason, now)
    if changed:
        return StatusResult(
            Change.APPLIED, send_id, "delivered" if status is ProviderStatus.DELIVERED else "failed"
        )
    current = (
        await session.execute(sa.select(sends.c.status).where(sends.c.id == send_id))
    ).scalar_one()
    early = current in ("queued", "reserved")
    return StatusResult(Change.TOO_EARLY if early else Change.UNCHANGED, send_id, current)


async def _delivered(session: AsyncSession, send_id: uuid.UUID, now: datetime) -> bool:
    row = (
        (
            await session.execute(
                sa.update(sends)
                .where(sends.c.id == send_id, sends.c.status == "sent")
                .values(status="delivered", delivered_at=now)
                .returning(*_IDENTITY)
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        return False
    await _publish(session, MessageDelivered(**_names(row), delivered_at=now))
    return True


async def _failed(
    session: AsyncSession,
    send_id: uuid.UUID,
    status: ProviderStatus,
    reason: str | None,
    now: datetime,
) -> bool:
    why = f"{status.value}: {reason}" if reason else status.value
    row = (
        (
            await session.execute(
                sa.update(sends)
                .where(sends.c.id == send_id, sends.c.status.in_(("sent", "delivered")))
                .values(status="failed", failed_at=now, reason=why[:500], last_error=why[:500])
                .returning(*_IDENTITY)
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        return False
    if status is ProviderStatus.BOUNCED:
        # The address is bad: stop using it until contacts sends a new one (as the
        # dispatcher does for a permanent refusal). Erased and merged rows keep nothing.
        await session.execute(
            sa.update(recipients)
            .where(recipients.c.customer_id == row["customer_id"], recipients.c.status == "active")
            .values(
                undeliverable=recipients.c.undeliverable.op("||")(
                    sa.func.jsonb_build_object(row["channel"], why[:200])
                ),
                updated_at=now,
            )
        )
    await _publish(session, MessageFailed(**_names(row), reason=why, permanent=True, failed_at=now))
    return True


async def _first_time(
    session: AsyncSession, send_id: uuid.UUID, column: sa.Column[datetime], now: datetime
) -> RowMapping | None:
    """Set `column` to `now` if it is still empty; the row's identity when it was."""
    result = await session.execute(
        sa.update(sends)
        .where(sends.c.id == send_id, column.is_(None))
        .values({column.name: now})
        .returning(*_IDENTITY)
    )
    return result.mappings().first()


def _names(row: RowMapping) -> dict[str, object]:
    return {
        "send_id": row["id"],
        "customer_id": row["customer_id"],
        "channel": row["channel"],
        "source": row["source"],
    }


async def _publish(session: AsyncSession, event: Event) -> None:
    await add_event(session, SCHEMA, event, source=SCHEMA)
