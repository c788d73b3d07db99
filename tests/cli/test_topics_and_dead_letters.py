"""`crm topics ensure` and `crm events replay-dead-letters`, on a real broker and database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm.cli import _ensure_topics
from shared.events.envelope import Event, EventEnvelope
from shared.events.platform import DEAD_LETTER_TOPIC
from shared.pipeline.consumer import ConsumerGroup, ConsumerRunner, Handler
from shared.pipeline.dead_letters import find_dead_letters, replay_dead_letters, replay_matching
from shared.settings import Settings
from tests.pipeline.harness import (
    SCHEMA,
    TEST_EVENTS,
    PingRecorded,
    Pipeline,
    record_ping,
    wait_until,
)
from tests.support.broker import Broker

GROUP = "replay-test"


@pytest.mark.kafka
async def test_topics_ensure_creates_once_with_the_configured_partitions(
    kafka_broker: Broker,
) -> None:
    settings = Settings(
        transport="kafka",
        kafka_bootstrap_servers=kafka_broker.bootstrap,
        kafka_partitions=3,
        kafka_retention_hours=36,
    )
    first = await _ensure_topics(settings)
    second = await _ensure_topics(settings)
    assert DEAD_LETTER_TOPIC in first.created
    assert "crm.purchases" in first.created or "crm.purchases" in first.existed
    assert first.existed == []
    assert second.created == []
    assert sorted(second.existed) == sorted(first.created)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(first.created)
        configs = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in first.created]
        )
    finally:
        await admin.close()
    assert {t["topic"]: len(t["partitions"]) for t in described} == dict.fromkeys(first.created, 3)
    retention = {
        resource[3]: {entry[0]: entry[1] for entry in resource[4]}.get("retention.ms")
        for response in configs
        for resource in response.resources
    }
    assert retention == dict.fromkeys(first.created, str(36 * 3600 * 1000))


async def test_topics_ensure_on_postgres_fixes_the_event_log_partitions(
    database_url: str,
) -> None:
    settings = Settings(database_url=database_url, eventlog_partitions=2)
    first = await _ensure_topics(settings)
    second = await _ensure_topics(settings)
    assert DEAD_LETTER_TOPIC in first.created
    assert second.created == [] and sorted(second.existed) == sorted(first.created)


@pytest.fixture
async def pipeline(database_url: str) -> AsyncIterator[Pipeline]:
    started = await Pipeline.start(database_url)
    try:
        yield started
    finally:
        await started.close()


def flaky_consumer(pipeline: Pipeline, broken: list[bool]) -> ConsumerRunner:
    """A consumer whose handler fails while `broken[0]`: the bug, then the fix."""

    async def handle(session: AsyncSession, event: PingRecorded, envelope: EventEnvelope) -> None:
        if broken[0]:
            raise RuntimeError("the bug")
        await record_ping(session, event, envelope)

    handlers: dict[type[Event], Handler] = {PingRecorded: handle}
    group = ConsumerGroup(GROUP, SCHEMA, "pipeline-test", handlers, TEST_EVENTS)
    sessions = async_sessionmaker(pipeline.engine, expire_on_commit=False, info={"group": GROUP})
    return ConsumerRunner(
        group,
        pipeline.transport.subscribe(GROUP, group.topics),
        sessions,
        max_attempts=2,
        retry_backoff=0.01,
        poll_interval=0.1,
    )


async def test_a_dead_letter_is_applied_once_after_the_fix(pipeline: Pipeline) -> None:
    broken = [True]
    pipeline.run(pipeline.relay())
    pipeline.run(flaky_consumer(pipeline, broken))
    await pipeline.publish([PingRecorded(entity="e1", seq=1), PingRecorded(entity="e2", seq=2)])

    async def dead_lettered() -> bool:
        count = await pipeline.scalar(
            f"SELECT count(*) FROM {SCHEMA}.inbox WHERE outcome = 'dead_lettered'"
        )
        return count == 2

    await wait_until(dead_lettered)
    broken[0] = False
    async with pipeline.sessions() as session:
        letters = await find_dead_letters(session, SCHEMA)
    assert len(letters) == 2
    first = letters[0]
    assert first.consumer_group == GROUP and first.event_type == "test.ping"

    assert first.event_id is not None
    log_size = "SELECT count(*) FROM crm_events.event_log"
    before = await pipeline.scalar(log_size)
    dry = await replay_matching(
        pipeline.sessions, SCHEMA, None, event_ids=[first.event_id], dry_run=True
    )
    assert [d.event_id for d in dry] == [first.event_id]
    assert await pipeline.scalar(log_size) == before, "--dry-run publishes nothing"
    assert await dead_lettered(), "--dry-run keeps the inbox rows"
    assert await pipeline.applied(GROUP) == []

    chosen = await replay_matching(
        pipeline.sessions, SCHEMA, pipeline.transport, event_ids=[first.event_id]
    )
    assert [c.event_id for c in chosen] == [first.event_id]

    async def applied() -> bool:
        return len(await pipeline.applied(GROUP)) == 1

    await wait_until(applied)
    # A second replay of the same letter is a duplicate now: the inbox says "applied".
    await replay_dead_letters(pipeline.sessions, SCHEMA, pipeline.transport, chosen)
    await pipeline.publish([PingRecorded(entity="e3", seq=3)])  # a marker behind it

    async def marker_applied() -> bool:
        return len(await pipeline.applied(GROUP)) == 2

    await wait_until(marker_applied)
    rows = await pipeline.applied(GROUP)
    assert [r[2] for r in rows].count(str(first.event_id)) == 1
    outcome = await pipeline.scalar(
        f"SELECT outcome FROM {SCHEMA}.inbox WHERE event_id = :id", id=first.event_id
    )
    assert outcome == "applied"
    still_dead = await pipeline.scalar(
        f"SELECT count(*) FROM {SCHEMA}.inbox WHERE outcome = 'dead_lettered'"
    )
    assert still_dead == 1, "the letter not chosen stays dead"
