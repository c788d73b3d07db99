"""Relay election and shutdown, and the outbox's atomicity with the business transaction."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text

from shared.events.platform import EventDeadLettered
from shared.pipeline.outbox import add_event
from tests.pipeline.harness import SCHEMA, PingRecorded, Pipeline, pings, wait_until


@pytest.fixture
async def pipeline(database_url: str) -> AsyncIterator[Pipeline]:
    started = await Pipeline.start(database_url)
    try:
        yield started
    finally:
        await started.close()


async def test_only_one_relay_leads_and_a_standby_takes_over(pipeline: Pipeline) -> None:
    first, second = pipeline.relay(), pipeline.relay()
    second.standby_interval = 0.1
    first_task = pipeline.run(first)

    async def first_leads() -> bool:
        return first.is_leader

    await wait_until(first_leads)
    pipeline.run(second)
    await asyncio.sleep(0.5)
    assert not second.is_leader, "the advisory lock admits one relay per service"

    first_task.cancel()
    await asyncio.gather(first_task, return_exceptions=True)

    async def second_leads() -> bool:
        return second.is_leader

    await wait_until(second_leads, timeout=10)
    pipeline.run(pipeline.consumer("group-a"))
    await pipeline.publish(pings(entities=2, per_entity=5))

    async def delivered() -> bool:
        return len(await pipeline.applied("group-a")) == 10

    await wait_until(delivered)


async def test_rolled_back_transaction_publishes_nothing(pipeline: Pipeline) -> None:
    with pytest.raises(RuntimeError):
        async with pipeline.sessions() as session, session.begin():
            await add_event(session, SCHEMA, PingRecorded(entity="e0", seq=0), source="t")
            raise RuntimeError("the business change failed")
    assert await pipeline.scalar(f"SELECT count(*) FROM {SCHEMA}.outbox") == 0


async def test_stopped_workers_finish_their_batch_and_return(pipeline: Pipeline) -> None:
    relay = pipeline.relay()
    consumer = pipeline.consumer("group-a")
    tasks = [pipeline.run(relay), pipeline.run(consumer)]
    await pipeline.publish(pings(entities=1, per_entity=50))

    async def delivered() -> bool:
        return len(await pipeline.applied("group-a")) == 50

    await wait_until(delivered)
    relay.stop()
    consumer.stop()
    done, pending = await asyncio.wait(tasks, timeout=5)
    assert not pending, "stop() must end both loops promptly"
    for task in done:
        assert task.exception() is None


async def test_event_log_retention_drops_old_events(pipeline: Pipeline) -> None:
    from shared.pipeline.transports.postgres import PostgresTransport

    transport = pipeline.transport
    assert isinstance(transport, PostgresTransport)
    pipeline.run(pipeline.relay())
    await pipeline.publish(pings(entities=1, per_entity=3))

    async def logged() -> bool:
        return await pipeline.scalar("SELECT count(*) FROM crm_events.event_log") == 3

    await wait_until(logged)
    assert await transport.purge(older_than_hours=1) == 0, "recent events stay"
    async with pipeline.engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE crm_events.event_log SET appended_at = now() - interval '2 hours' "
                'WHERE "offset" = 0'
            )
        )
    assert await transport.purge(older_than_hours=1) == 1
    assert await pipeline.scalar("SELECT count(*) FROM crm_events.event_log") == 2


def _backlog_age() -> float | None:
    return REGISTRY.get_sample_value(
        "crm_outbox_oldest_unpublished_age_seconds", {"schema": SCHEMA}
    )


async def test_a_standby_reports_the_backlog_a_stuck_leader_leaves(pipeline: Pipeline) -> None:
    async with pipeline.engine.connect() as stuck_leader:
        await stuck_leader.execute(
            text("SELECT pg_advisory_lock(hashtextextended(:name, 0))"),
            {"name": f"crm.relay.{SCHEMA}"},
        )
        await stuck_leader.commit()
        await pipeline.publish(pings(entities=1, per_entity=3))
        standby = pipeline.relay()
        standby.standby_interval = 0.1
        pipeline.run(standby)

        async def backlog_seen() -> bool:
            return (_backlog_age() or 0) > 0.3

        await wait_until(backlog_seen)
        assert not standby.is_leader
        await stuck_leader.execute(
            text("SELECT pg_advisory_unlock(hashtextextended(:name, 0))"),
            {"name": f"crm.relay.{SCHEMA}"},
        )
        await stuck_leader.commit()

    async def drained() -> bool:
        return standby.is_leader and _backlog_age() == 0

    await wait_until(drained, timeout=10)
    assert (
        await pipeline.scalar(f"SELECT count(*) FROM {SCHEMA}.outbox WHERE published_at IS NULL")
        == 0
    )


async def test_the_purge_spares_dead_letters_for_a_later_replay(pipeline: Pipeline) -> None:
    dead_letter = EventDeadLettered(
        consumer_group="group-a",
        original_topic="crm.pings",
        original_partition=0,
        original_offset=7,
        original_key="e0",
        reason="handler failed",
        attempts=3,
        payload="{}",
        payload_encoding="utf-8",
    )
    async with pipeline.sessions() as session, session.begin():
        await add_event(session, SCHEMA, PingRecorded(entity="e0", seq=0), source="t")
        await add_event(session, SCHEMA, dead_letter, source="t")
    async with pipeline.engine.connect() as connection:
        await connection.execute(
            text(f"UPDATE {SCHEMA}.outbox SET published_at = now() - interval '2 hours'")
        )
        await connection.commit()
        relay = pipeline.relay()
        assert await relay.relay_batch(connection) == 0  # idle: the purge runs
    kept = await pipeline.scalar(f"SELECT string_agg(event_type, ',') FROM {SCHEMA}.outbox")
    assert kept == EventDeadLettered.event_type
