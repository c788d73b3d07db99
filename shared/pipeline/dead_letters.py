"""Re-publishing dead letters after the cause is fixed (`crm events replay-dead-letters`).

Source: the consuming service's own outbox. The consumer writes each dead letter there
(type `event.dead_lettered`, in the transaction that gave up on the event), and the
relay's purge of published rows spares that type, so the outbox is a durable record of
every dead letter the service produced, readable without the broker.

Replay publishes the original bytes, with the original key, onto the original topic,
through the transport; the event keeps its id. The consumer that gave up had written an
inbox row with outcome `dead_lettered` for that id, and the inbox refuses any id it holds,
so that row would make the consumer skip the replayed event. Replay therefore deletes
those rows (only `dead_lettered` ones, only of the group that gave up) in a committed
transaction *before* publishing. Other groups that applied the event keep their
`applied` rows and skip the replay as the duplicate it is for them.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.events.envelope import EventEnvelope
from shared.events.platform import EventDeadLettered
from shared.pipeline.tables import platform_tables
from shared.pipeline.transports.base import OutgoingMessage, Transport

__all__ = [
    "DeadLetter",
    "find_dead_letters",
    "release_inbox",
    "replay_dead_letters",
    "replay_matching",
]


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter read back from the outbox, with the message to re-publish."""

    letter_id: uuid.UUID
    created_at: datetime
    consumer_group: str
    event_id: uuid.UUID | None
    event_type: str | None
    reason: str
    message: OutgoingMessage


async def find_dead_letters(
    session: AsyncSession,
    schema: str,
    *,
    event_ids: Sequence[uuid.UUID] = (),
    event_type: str | None = None,
    since: datetime | None = None,
) -> list[DeadLetter]:
    """Dead letters in `schema`'s outbox, oldest first, one per original event.

    Filters combine: only the given original event ids, of `event_type`, written at or
    after `since`. A record that did not parse has no event id and is only chosen when no
    ids are given.
    """
    outbox = platform_tables(schema).outbox
    query = (
        select(outbox.c.event_id, outbox.c.created_at, outbox.c.payload)
        .where(outbox.c.event_type == EventDeadLettered.event_type)
        .order_by(outbox.c.id)
    )
    if since is not None:
        query = query.where(outbox.c.created_at >= since)
    wanted = {str(i) for i in event_ids}
    letters: list[DeadLetter] = []
    seen: set[str] = set()
    for letter_id, created_at, payload in await session.execute(query):
        envelope = EventEnvelope.model_validate_json(payload)
        letter = EventDeadLettered.model_validate(envelope.data)
        if wanted and letter.original_event_id not in wanted:
            continue
        if event_type is not None and letter.original_type != event_type:
            continue
        # One event may be dead-lettered twice (redelivered at another offset): once is enough.
        identity = letter.original_event_id or str(letter_id)
        if identity in seen:
            continue
        seen.add(identity)
        value = (
            base64.b64decode(letter.payload)
            if letter.payload_encoding == "base64"
            else letter.payload.encode()
        )
        letters.append(
            DeadLetter(
                letter_id=letter_id,
                created_at=created_at,
                consumer_group=letter.consumer_group,
                event_id=uuid.UUID(letter.original_event_id) if letter.original_event_id else None,
                event_type=letter.original_type,
                reason=letter.reason,
                message=OutgoingMessage(letter.original_topic, letter.original_key, value),
            )
        )
    return letters


async def release_inbox(session: AsyncSession, schema: str, letters: Sequence[DeadLetter]) -> int:
    """Delete the `dead_lettered` inbox rows of `letters`, so a replay is applied; flushes."""
    inbox = platform_tables(schema).inbox
    keys = [(d.consumer_group, d.event_id) for d in letters if d.event_id is not None]
    if not keys:
        return 0
    result = await session.execute(
        delete(inbox).where(
            inbox.c.outcome == "dead_lettered",
            or_(*(and_(inbox.c.consumer_group == g, inbox.c.event_id == i) for g, i in keys)),
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def replay_dead_letters(
    sessions: async_sessionmaker[AsyncSession],
    schema: str,
    transport: Transport,
    letters: Sequence[DeadLetter],
) -> int:
    """Release the inbox rows of `letters` (committed), then publish their originals.

    Publishing comes after the commit: a consumer that received the event while its
    `dead_lettered` row still stood would skip it for good. Should publishing fail, the
    letters are still in the outbox and a second run replays them.
    """
    if not letters:
        return 0
    async with sessions() as session, session.begin():
        await release_inbox(session, schema, letters)
    await transport.publish([d.message for d in letters])
    return len(letters)


async def replay_matching(
    sessions: async_sessionmaker[AsyncSession],
    schema: str,
    transport: Transport | None,
    *,
    event_ids: Sequence[uuid.UUID] = (),
    event_type: str | None = None,
    since: datetime | None = None,
    dry_run: bool = False,
) -> list[DeadLetter]:
    """Find the dead letters the filters choose and, unless `dry_run`, replay them.

    With `dry_run` nothing is written or published and `transport` may be None.
    """
    async with sessions() as session:
        letters = await find_dead_letters(
            session, schema, event_ids=event_ids, event_type=event_type, since=since
        )
    if not dry_run:
        if transport is None:
            raise ValueError("a transport is needed unless dry_run")
        await replay_dead_letters(sessions, schema, transport, letters)
    return letters
