"""Writing events: into the outbox, in the caller's transaction.

A service never talks to the broker while handling a request; it adds events here and the
relay publishes them after commit. Nothing is published for a transaction that rolls back.
"""

from __future__ import annotations

from sqlalchemy import func, literal, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.events.envelope import Event, EventEnvelope
from shared.pipeline.tables import platform_tables


async def add_event(
    session: AsyncSession, schema: str, event: Event, *, source: str
) -> EventEnvelope:
    """Queue `event` in `schema`'s outbox as part of the session's transaction."""
    envelope = event.to_envelope(source=source)
    await add_envelope(session, schema, envelope, topic=event.topic)
    return envelope


async def add_envelope(
    session: AsyncSession,
    schema: str,
    envelope: EventEnvelope,
    *,
    topic: str,
    skip_existing: bool = False,
) -> None:
    """Queue a ready-made envelope for `topic`.

    The transaction first takes an advisory lock on the subject, held until commit, so two
    transactions that write events for one subject get outbox ids in their commit order:
    the relay publishes by id, which keeps one customer's events in order. With
    `skip_existing`, an envelope whose id is already in the outbox is left out silently.
    """
    outbox = platform_tables(schema).outbox
    lock = select(
        func.pg_advisory_xact_lock(func.hashtextextended(literal(envelope.subject), 0))
    ).subquery()
    values = select(
        literal(envelope.id).label("event_id"),
        literal(topic).label("topic"),
        literal(envelope.subject).label("key"),
        literal(envelope.type).label("event_type"),
        literal(envelope.model_dump_json()).label("payload"),
    ).select_from(lock)
    statement = insert(outbox).from_select(
        ["event_id", "topic", "key", "event_type", "payload"], values
    )
    if skip_existing:
        statement = statement.on_conflict_do_nothing(index_elements=["event_id"])
    await session.execute(statement)


async def unpublished_count(session: AsyncSession, schema: str) -> int:
    """How many events wait for the relay (the outbox lag)."""
    result = await session.execute(
        text(f'SELECT count(*) FROM "{schema}".outbox WHERE published_at IS NULL')
    )
    return int(result.scalar_one())
