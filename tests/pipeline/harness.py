"""A test-only producer and consumer on the real pipeline (not a product service).

The producer writes `test.ping` events into the `pipeline_test` outbox; consumer groups
record each applied event in `pipeline_test.applied`, so a test can count deliveries.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.db.engine import create_engine, session_factory
from shared.db.migrations import migrate
from shared.events.envelope import Event, EventEnvelope
from shared.events.platform import DEAD_LETTER_TOPIC
from shared.events.registry import EVENTS, EventRegistry
from shared.pipeline.consumer import BatchHandler, ConsumerGroup, ConsumerRunner, Handler, Run
from shared.pipeline.outbox import add_event
from shared.pipeline.relay import Relay
from shared.pipeline.transports.base import Transport
from shared.pipeline.transports.kafka import KafkaTransport
from shared.pipeline.transports.postgres import PostgresTransport
from shared.settings import Settings

SCHEMA = "pipeline_test"
MIGRATIONS = Path(__file__).parent / "migrations"
TOPIC = "test.pings"

TEST_EVENTS = EventRegistry()
TEST_EVENTS.include(EVENTS)


@TEST_EVENTS.register
class PingRecorded(Event):
    """A numbered ping about one entity; `fail` makes the test handler raise."""

    event_type: ClassVar[str] = "test.ping"
    topic: ClassVar[str] = TOPIC
    subject_field: ClassVar[str] = "entity"

    entity: str
    seq: int
    fail: bool = False


async def record_ping(session: AsyncSession, event: PingRecorded, envelope: EventEnvelope) -> None:
    """The test handler: one row per application, so double application shows."""
    if event.fail:
        raise RuntimeError(f"ping {event.seq} asked to fail")
    await session.execute(
        text(
            f"INSERT INTO {SCHEMA}.applied (consumer_group, event_id, entity, seq, published_at) "
            "VALUES (:group, :id, :entity, :seq, :time)"
        ),
        {
            "group": session.info["group"],
            "id": envelope.id,
            "entity": event.entity,
            "seq": event.seq,
            "time": envelope.time,
        },
    )


async def record_pings(session: AsyncSession, run: Run) -> None:
    """The batch form of `record_ping`: one multi-row INSERT for a run of pings."""
    if any(event.fail for event, _ in run):
        failing = next(event for event, _ in run if event.fail)
        raise RuntimeError(f"ping {failing.seq} asked to fail")
    await session.execute(
        text(
            f"INSERT INTO {SCHEMA}.applied (consumer_group, event_id, entity, seq, published_at) "
            "VALUES (:group, :id, :entity, :seq, :time)"
        ),
        [
            {
                "group": session.info["group"],
                "id": envelope.id,
                "entity": event.entity,
                "seq": event.seq,
                "time": envelope.time,
            }
            for event, envelope in run
        ],
    )


RECORD_PINGS = BatchHandler(record_pings)


def settings_for(database_url: str, bootstrap: str | None = None) -> Settings:
    """Settings tuned for quick tests."""
    return Settings(
        database_url=database_url,
        transport="kafka" if bootstrap else "postgres",
        kafka_bootstrap_servers=bootstrap or "unused:9092",
        kafka_partitions=4,
        kafka_session_timeout_ms=6000,
        kafka_heartbeat_interval_ms=300,
        eventlog_partitions=4,
        consumer_retry_backoff_seconds=0.01,
    )


@dataclass
class Pipeline:
    """The moving parts of one test: database, transport, relays and consumers."""

    settings: Settings
    engine: AsyncEngine
    transport: Transport
    sessions: async_sessionmaker[AsyncSession]
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def start(
        cls, database_url: str, bootstrap: str | None = None, transport: Transport | None = None
    ) -> Pipeline:
        settings = settings_for(database_url, bootstrap)
        engine = create_engine(database_url)
        await migrate(engine, SCHEMA, MIGRATIONS)
        if transport is None:
            transport = (
                KafkaTransport(settings, [TOPIC, DEAD_LETTER_TOPIC])
                if bootstrap
                else PostgresTransport(engine, settings.eventlog_partitions)
            )
        await transport.start()
        return cls(settings, engine, transport, session_factory(engine))

    async def publish(self, pings: list[PingRecorded], per_transaction: int = 50) -> None:
        """Write pings to the outbox in transactions of `per_transaction`."""
        for start in range(0, len(pings), per_transaction):
            async with self.sessions() as session, session.begin():
                for ping in pings[start : start + per_transaction]:
                    await add_event(session, SCHEMA, ping, source="pipeline-test")

    def relay(self, transport: Transport | None = None) -> Relay:
        return Relay(self.engine, SCHEMA, transport or self.transport)

    def consumer(
        self, group: str, transport: Transport | None = None, *, batch: bool = False
    ) -> ConsumerRunner:
        handlers: dict[type[Event], Handler] = {
            PingRecorded: RECORD_PINGS if batch else record_ping
        }
        definition = ConsumerGroup(group, SCHEMA, "pipeline-test", handlers, TEST_EVENTS)
        sessions = async_sessionmaker(self.engine, expire_on_commit=False, info={"group": group})
        return ConsumerRunner(
            definition,
            (transport or self.transport).subscribe(group, definition.topics),
            sessions,
            batch_size=100,
            max_attempts=3,
            retry_backoff=0.01,
            poll_interval=0.2,
        )

    def run(self, worker: Relay | ConsumerRunner) -> asyncio.Task[None]:
        task = asyncio.create_task(worker.run())
        self.tasks.append(task)
        return task

    async def applied(self, group: str) -> list[tuple[str, int, str]]:
        """(entity, seq, event id) of every application by `group`, in application order."""
        async with self.engine.connect() as connection:
            rows = await connection.execute(
                text(
                    f"SELECT entity, seq, event_id::text FROM {SCHEMA}.applied "
                    "WHERE consumer_group = :group ORDER BY id"
                ),
                {"group": group},
            )
            return [(r[0], r[1], r[2]) for r in rows]

    async def scalar(self, sql: str, **params: object) -> object:
        async with self.engine.connect() as connection:
            return (await connection.execute(text(sql), params)).scalar_one()

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        await self.transport.stop()
        await self.engine.dispose()


def pings(entities: int, per_entity: int) -> list[PingRecorded]:
    """Interleaved pings: entity e gets seq 0..per_entity-1 in order."""
    return [PingRecorded(entity=f"e{e}", seq=s) for s in range(per_entity) for e in range(entities)]


async def wait_until(
    condition: Callable[[], Awaitable[bool]], timeout: float = 30.0, interval: float = 0.1
) -> None:
    """Poll `condition` until true; fail the test with a clear message on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")
