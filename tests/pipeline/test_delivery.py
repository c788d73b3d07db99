"""Delivery guarantees of the event pipeline, on both transports.

Every test runs once on the PostgreSQL event log and once on Kafka (a real tansu broker):
events are delivered once per consumer group in per-subject order, crashes at each hand-off
lose nothing and apply nothing twice, and bad messages go to the dead-letter topic while
the consumer carries on.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Sequence

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.events.envelope import EventEnvelope
from shared.events.platform import DEAD_LETTER_TOPIC, EventDeadLettered
from shared.pipeline.consumer import ConsumerGroup, ConsumerRunner
from shared.pipeline.transports.base import OutgoingMessage, Record, Subscription, Transport
from tests.pipeline.harness import (
    SCHEMA,
    TEST_EVENTS,
    TOPIC,
    PingRecorded,
    Pipeline,
    pings,
    wait_until,
)

TRANSPORTS = ["postgres", pytest.param("kafka", marks=pytest.mark.kafka)]


@pytest.fixture(params=TRANSPORTS)
async def pipeline(request: pytest.FixtureRequest, database_url: str) -> AsyncIterator[Pipeline]:
    bootstrap = None
    if request.param == "kafka":
        bootstrap = request.getfixturevalue("kafka_broker").bootstrap
    started = await Pipeline.start(database_url, bootstrap)
    try:
        yield started
    finally:
        await started.close()


def assert_once_in_order(applied: Sequence[tuple[str, int, str]], entities: int, per: int) -> None:
    ids = Counter(event_id for _, _, event_id in applied)
    assert [i for i, n in ids.items() if n > 1] == [], "some events were applied twice"
    by_entity: dict[str, list[int]] = defaultdict(list)
    for entity, seq, _ in applied:
        by_entity[entity].append(seq)
    assert sorted(by_entity) == sorted(f"e{e}" for e in range(entities))
    for entity, seqs in by_entity.items():
        assert seqs == list(range(per)), f"{entity} applied out of order or incompletely"


async def test_every_event_reaches_each_group_once_in_subject_order(pipeline: Pipeline) -> None:
    pipeline.run(pipeline.relay())
    pipeline.run(pipeline.consumer("group-a"))
    pipeline.run(pipeline.consumer("group-b"))
    await pipeline.publish(pings(entities=6, per_entity=30), per_transaction=7)

    async def both_done() -> bool:
        counts = [len(await pipeline.applied(g)) for g in ("group-a", "group-b")]
        return min(counts) >= 180

    await wait_until(both_done, timeout=60)
    await asyncio.sleep(0.5)  # room for a stray duplicate to show up
    for group in ("group-a", "group-b"):
        assert_once_in_order(await pipeline.applied(group), entities=6, per=30)


async def test_crash_between_outbox_commit_and_relay_loses_nothing(pipeline: Pipeline) -> None:
    await pipeline.publish(pings(entities=4, per_entity=25), per_transaction=10)
    relay = pipeline.relay()
    relay.batch_size = 10
    first = pipeline.run(relay)

    async def some_published() -> bool:
        return (
            int(
                str(
                    await pipeline.scalar(
                        f"SELECT count(*) FROM {SCHEMA}.outbox WHERE published_at IS NOT NULL"
                    )
                )
            )
            > 0
        )

    await wait_until(some_published)
    first.cancel()  # the relay process dies part-way through the outbox
    await asyncio.gather(first, return_exceptions=True)

    pipeline.run(pipeline.relay())
    pipeline.run(pipeline.consumer("group-a"))

    async def done() -> bool:
        return len(await pipeline.applied("group-a")) >= 100

    await wait_until(done, timeout=60)
    await asyncio.sleep(0.5)
    assert_once_in_order(await pipeline.applied("group-a"), entities=4, per=25)


class CrashAfterPublish(Transport):
    """The real transport, but the caller dies right after its first batch is acknowledged."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.name = inner.name
        self.crashed = False

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        await self.inner.publish(messages)
        if not self.crashed:
            self.crashed = True
            raise asyncio.CancelledError("crash after send, before mark")

    async def ping(self) -> None:
        await self.inner.ping()

    def subscribe(self, group: str, topics: Sequence[str]) -> Subscription:
        return self.inner.subscribe(group, topics)


async def test_crash_between_relay_send_and_mark_applies_nothing_twice(pipeline: Pipeline) -> None:
    await pipeline.publish(pings(entities=3, per_entity=20))
    crashing = CrashAfterPublish(pipeline.transport)
    first = pipeline.run(pipeline.relay(crashing))
    await asyncio.gather(first, return_exceptions=True)
    assert crashing.crashed
    unmarked = await pipeline.scalar(
        f"SELECT count(*) FROM {SCHEMA}.outbox WHERE published_at IS NULL"
    )
    assert unmarked == 60, "the crashed batch must stay unmarked, to be sent again"

    pipeline.run(pipeline.relay())
    pipeline.run(pipeline.consumer("group-a"))

    async def done() -> bool:
        return len(await pipeline.applied("group-a")) >= 60

    await wait_until(done, timeout=60)
    await asyncio.sleep(1.0)
    assert_once_in_order(await pipeline.applied("group-a"), entities=3, per=20)


class CrashAfterHandlerCommit(Subscription):
    """The real subscription, but the consumer dies after its first handler commit."""

    def __init__(self, inner: Subscription) -> None:
        self.inner = inner
        self.crashed = False

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    async def wait(self, timeout: float) -> None:
        await self.inner.wait(timeout)

    async def fetch(self, session: AsyncSession, max_records: int) -> list[Record]:
        return await self.inner.fetch(session, max_records)

    async def stage_offsets(self, session: AsyncSession, records: Sequence[Record]) -> None:
        await self.inner.stage_offsets(session, records)

    async def rewind(self, records: Sequence[Record]) -> None:
        await self.inner.rewind(records)

    async def commit(self, records: Sequence[Record]) -> None:
        if not self.crashed:
            self.crashed = True
            raise asyncio.CancelledError("crash after handler commit, before offset commit")
        await self.inner.commit(records)

    def wake(self) -> None:
        self.inner.wake()


async def test_crash_between_handler_commit_and_offset_commit(pipeline: Pipeline) -> None:
    pipeline.run(pipeline.relay())
    await pipeline.publish(pings(entities=3, per_entity=20))
    doomed = pipeline.consumer("group-a")
    crashing = CrashAfterHandlerCommit(doomed.subscription)
    doomed.subscription = crashing
    first = pipeline.run(doomed)
    await asyncio.gather(first, return_exceptions=True)
    assert crashing.crashed
    assert len(await pipeline.applied("group-a")) > 0, "the first batch did commit"

    pipeline.run(pipeline.consumer("group-a"))

    async def done() -> bool:
        return len(await pipeline.applied("group-a")) >= 60

    await wait_until(done, timeout=60)
    await asyncio.sleep(1.0)
    assert_once_in_order(await pipeline.applied("group-a"), entities=3, per=20)


async def test_bad_messages_go_to_dead_letters_and_the_consumer_goes_on(
    pipeline: Pipeline,
) -> None:
    letters: list[EventDeadLettered] = []

    async def collect(_: AsyncSession, letter: EventDeadLettered, __: EventEnvelope) -> None:
        letters.append(letter)

    watcher_group = ConsumerGroup(
        "dead-letter-watch", SCHEMA, "pipeline-test", {EventDeadLettered: collect}, TEST_EVENTS
    )
    pipeline.run(pipeline.relay())
    pipeline.run(
        ConsumerRunner(
            watcher_group,
            pipeline.transport.subscribe(watcher_group.name, [DEAD_LETTER_TOPIC]),
            pipeline.sessions,
            poll_interval=0.2,
        )
    )
    pipeline.run(pipeline.consumer("group-a"))

    await pipeline.publish([PingRecorded(entity="e0", seq=0)])
    await pipeline.transport.publish(
        [
            OutgoingMessage(TOPIC, "e0", b"this is not json"),
            OutgoingMessage(TOPIC, "e0", b'{"id": "not-a-uuid", "type": "test.ping"}'),
        ]
    )
    await pipeline.publish(
        [PingRecorded(entity="e0", seq=1, fail=True), PingRecorded(entity="e0", seq=2)]
    )
    wrong_version = PingRecorded(entity="e0", seq=3).to_envelope(source="elsewhere")
    wrong_version = wrong_version.model_copy(update={"schema_version": 99})
    await pipeline.transport.publish(
        [OutgoingMessage(TOPIC, "e0", wrong_version.model_dump_json().encode())]
    )
    await pipeline.publish([PingRecorded(entity="e0", seq=4)])

    async def settled() -> bool:
        return len(letters) >= 4 and len(await pipeline.applied("group-a")) >= 3

    await wait_until(settled, timeout=60)
    await asyncio.sleep(0.5)
    assert [seq for _, seq, _ in await pipeline.applied("group-a")] == [0, 2, 4]
    reasons = sorted(letter.reason for letter in letters)
    assert len(letters) == 4
    assert any(r.startswith("not an event envelope") for r in reasons)
    assert any("handler failed after 3 attempts" in r for r in reasons)
    assert any("version 99" in r for r in reasons)
    assert {letter.original_topic for letter in letters} == {TOPIC}
    assert any(letter.payload == "this is not json" for letter in letters)


async def test_batch_handlers_keep_order_and_isolate_a_bad_event(pipeline: Pipeline) -> None:
    pipeline.run(pipeline.relay())
    pipeline.run(pipeline.consumer("batched", batch=True))
    batch = pings(entities=3, per_entity=10)
    batch[13] = PingRecorded(entity=batch[13].entity, seq=batch[13].seq, fail=True)
    await pipeline.publish(batch, per_transaction=30)

    async def settled() -> bool:
        return len(await pipeline.applied("batched")) >= 29

    await wait_until(settled, timeout=60)
    await asyncio.sleep(0.5)
    applied = await pipeline.applied("batched")
    failed = (batch[13].entity, batch[13].seq)
    assert (failed[0], failed[1]) not in {(e, s) for e, s, _ in applied}
    assert len(applied) == 29, "the bad event is dead-lettered, the rest applied once"
    by_entity: dict[str, list[int]] = defaultdict(list)
    for entity, seq, _ in applied:
        by_entity[entity].append(seq)
    for entity, seqs in by_entity.items():
        assert seqs == sorted(seqs), f"{entity} out of order"
    dead = await pipeline.scalar(
        f"SELECT count(*) FROM {SCHEMA}.outbox WHERE topic = :t", t=DEAD_LETTER_TOPIC
    )
    assert dead == 1


async def test_an_event_twice_in_one_batch_counts_as_a_duplicate(pipeline: Pipeline) -> None:
    await pipeline.publish(pings(entities=1, per_entity=1))
    async with pipeline.engine.connect() as connection:
        topic, key, payload = (
            await connection.execute(text(f"SELECT topic, key, payload FROM {SCHEMA}.outbox"))
        ).one()
    message = OutgoingMessage(topic, key, payload.encode())
    await pipeline.transport.publish([message, message])  # a relay re-sending, back to back

    def outcome(name: str) -> float:
        labels = {"group": "group-dup", "outcome": name}
        return REGISTRY.get_sample_value("crm_events_consumed_total", labels) or 0.0

    before = {name: outcome(name) for name in ("applied", "duplicate", "ignored")}
    consumer = pipeline.consumer("group-dup")
    await consumer.subscription.start()
    try:
        taken = 0
        deadline = asyncio.get_running_loop().time() + 30  # a Kafka group join takes seconds
        while taken < 2 and asyncio.get_running_loop().time() < deadline:
            taken += await consumer.process_batch()
            await consumer.subscription.wait(0.2)
    finally:
        await consumer.subscription.stop()
    assert taken == 2
    assert len(await pipeline.applied("group-dup")) == 1
    after = {name: outcome(name) - before[name] for name in before}
    assert after == {"applied": 1, "duplicate": 1, "ignored": 0}
