"""Writing events: into the outbox, in the caller's transaction.

A service never talks to the broker while handling a request; it adds events here and the
relay publishes them after commit. Nothing is published for a transaction that rolls back.

Before inserting, the transaction takes an advisory lock per subject (held until commit,
taken in one sorted order so that two writers cannot deadlock on them): two transactions
that write events for one subject thus get outbox ids in their commit order, and the
relay, which publishes by id, keeps one customer's events in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.events.envelope import Event, EventEnvelope


@cache
def _insert_statement(schema: str, skip_existing: bool) -> TextClause:
    # One statement, cached per schema: locks first (a materialised CTE that the WHERE
    # forces to run before any row), then all rows in the order given.
    conflict = "ON CONFLICT (event_id) DO NOTHING" if skip_existing else ""
    return text(
        f"""
        WITH locks AS MATERIALIZED (
            SELECT pg_advisory_xact_lock(h)
            FROM (SELECT DISTINCT hashtextextended(k, 0) AS h
                  FROM unnest(CAST(:keys AS text[])) AS k) AS hashes
            ORDER BY h
        )
        INSERT INTO "{schema}".outbox (event_id, topic, key, event_type, payload)
        SELECT u.event_id, u.topic, u.key, u.event_type, u.payload
        FROM unnest(
            CAST(:ids AS uuid[]), CAST(:topics AS text[]), CAST(:keys AS text[]),
            CAST(:types AS text[]), CAST(:payloads AS text[])
        ) WITH ORDINALITY AS u(event_id, topic, key, event_type, payload, n)
        WHERE (SELECT count(*) FROM locks) >= 0
        ORDER BY u.n
        {conflict}
        """
    )


async def add_events(
    session: AsyncSession, schema: str, events: Sequence[Event], *, source: str
) -> list[EventEnvelope]:
    """Queue `events`, in order, in `schema`'s outbox as part of the session's transaction."""
    envelopes = [event.to_envelope(source=source) for event in events]
    await add_envelopes(session, schema, envelopes, topics=[event.topic for event in events])
    return envelopes


async def add_event(
    session: AsyncSession, schema: str, event: Event, *, source: str
) -> EventEnvelope:
    """Queue one event; see `add_events`."""
    return (await add_events(session, schema, [event], source=source))[0]


async def add_envelopes(
    session: AsyncSession,
    schema: str,
    envelopes: Sequence[EventEnvelope],
    *,
    topics: Sequence[str],
    skip_existing: bool = False,
) -> None:
    """Queue ready-made envelopes, `topics[i]` for `envelopes[i]`.

    With `skip_existing`, an envelope whose id is already in the outbox is left out.
    """
    if not envelopes:
        return
    await session.execute(
        _insert_statement(schema, skip_existing),
        {
            "ids": [e.id for e in envelopes],
            "topics": list(topics),
            "keys": [e.subject for e in envelopes],
            "types": [e.type for e in envelopes],
            "payloads": [e.model_dump_json() for e in envelopes],
        },
    )


async def add_envelope(
    session: AsyncSession,
    schema: str,
    envelope: EventEnvelope,
    *,
    topic: str,
    skip_existing: bool = False,
) -> None:
    """Queue one ready-made envelope for `topic`."""
    await add_envelopes(session, schema, [envelope], topics=[topic], skip_existing=skip_existing)


async def unpublished_count(session: AsyncSession, schema: str) -> int:
    """How many events wait for the relay (the outbox lag)."""
    result = await session.execute(
        text(f'SELECT count(*) FROM "{schema}".outbox WHERE published_at IS NULL')
    )
    return int(result.scalar_one())
