"""The PostgreSQL transport: an append-only event log in the `crm_events` schema.

Offsets are gap-free: a publisher bumps the partition's head row and appends in one
transaction, so writers to a partition are serialised by that row lock and a rolled-back
publish leaves no hole. Consumers claim a group's partitions with `FOR UPDATE SKIP LOCKED`
on the offset rows, inside the transaction that runs their handlers and advances the
offset, so progress and effects commit together. `NOTIFY` wakes idle consumers.

Because offsets move inside the handler's transaction, the consuming service's database
must hold the event log: this transport is the single-database (embedded) mode. Services
in separate databases use Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from shared.db.migrations import migrate
from shared.pipeline.transports.base import (
    OutgoingMessage,
    Record,
    Subscription,
    Transport,
    TransportError,
)

SCHEMA = "crm_events"
MIGRATIONS = Path(__file__).parent.parent / "eventlog_migrations"
NOTIFY_CHANNEL = "crm_events"


def partition_for(key: str, partitions: int) -> int:
    """A stable partition for `key`, the same in every process and run."""
    return zlib.crc32(key.encode()) % partitions


class PostgresTransport(Transport):
    """Event log tables in the shared database."""

    name = "postgres"

    def __init__(
        self,
        engine: AsyncEngine,
        default_partitions: int = 4,
        retention_hours: float | None = None,
        purge_interval_seconds: float = 600.0,
    ) -> None:
        self.engine = engine
        self.default_partitions = default_partitions
        self.retention_hours = retention_hours
        self.purge_interval_seconds = purge_interval_seconds
        self._partitions: dict[str, int] = {}
        self._purger: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await migrate(self.engine, SCHEMA, MIGRATIONS)
        if self.retention_hours is not None:
            self._purger = asyncio.create_task(self._purge_periodically(), name="eventlog-purge")

    async def stop(self) -> None:
        if self._purger is not None:
            self._purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purger
            self._purger = None

    async def purge(self, older_than_hours: float) -> int:
        """Delete events appended more than `older_than_hours` ago; returns how many.

        Like Kafka's retention, this does not wait for slow consumer groups: the log is
        a buffer between services, not their record. Any process may run it.
        """
        async with self.engine.begin() as connection:
            result = await connection.execute(
                text(
                    f"DELETE FROM {SCHEMA}.event_log "
                    "WHERE appended_at < now() - make_interval(secs => :seconds)"
                ),
                {"seconds": older_than_hours * 3600},
            )
        return int(result.rowcount or 0)

    async def _purge_periodically(self) -> None:
        assert self.retention_hours is not None
        while True:
            try:
                await self.purge(self.retention_hours)
            except (OSError, DBAPIError):
                pass  # the next round tries again
            await asyncio.sleep(self.purge_interval_seconds)

    async def ping(self) -> None:
        try:
            async with self.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except (OSError, DBAPIError) as exc:
            raise TransportError(f"event log unreachable: {exc}") from exc

    async def partitions_of(self, connection: AsyncConnection, topic: str) -> int:
        """The topic's partition count, fixed when the topic is first used."""
        cached = self._partitions.get(topic)
        if cached is not None:
            return cached
        await connection.execute(
            text(
                f"INSERT INTO {SCHEMA}.topics (name, partitions) VALUES (:name, :partitions) "
                "ON CONFLICT (name) DO NOTHING"
            ),
            {"name": topic, "partitions": self.default_partitions},
        )
        count = (
            await connection.execute(
                text(f"SELECT partitions FROM {SCHEMA}.topics WHERE name = :name"), {"name": topic}
            )
        ).scalar_one()
        self._partitions[topic] = int(count)
        return int(count)

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        try:
            async with self.engine.begin() as connection:
                await self._append(connection, messages)
        except (OSError, DBAPIError) as exc:
            raise TransportError(f"could not append to the event log: {exc}") from exc

    async def _append(
        self, connection: AsyncConnection, messages: Sequence[OutgoingMessage]
    ) -> None:
        by_partition: dict[tuple[str, int], list[OutgoingMessage]] = defaultdict(list)
        for message in messages:
            partitions = await self.partitions_of(connection, message.topic)
            by_partition[(message.topic, partition_for(message.key, partitions))].append(message)
        rows: list[dict[str, Any]] = []
        # Heads are bumped in a fixed order so that concurrent publishers cannot deadlock.
        for (topic, partition), batch in sorted(by_partition.items()):
            end = (
                await connection.execute(
                    text(
                        f"INSERT INTO {SCHEMA}.partition_heads AS h "
                        "(topic, partition, next_offset) "
                        "VALUES (:topic, :partition, :count) "
                        "ON CONFLICT (topic, partition) "
                        "DO UPDATE SET next_offset = h.next_offset + EXCLUDED.next_offset "
                        "RETURNING next_offset"
                    ),
                    {"topic": topic, "partition": partition, "count": len(batch)},
                )
            ).scalar_one()
            start = int(end) - len(batch)
            rows.extend(
                {
                    "topic": topic,
                    "partition": partition,
                    "offset": start + index,
                    "key": message.key,
                    "value": message.value,
                }
                for index, message in enumerate(batch)
            )
        await connection.execute(
            text(
                f'INSERT INTO {SCHEMA}.event_log (topic, partition, "offset", key, value) '
                "VALUES (:topic, :partition, :offset, :key, :value)"
            ),
            rows,
        )
        for topic in sorted({message.topic for message in messages}):
            await connection.execute(
                text("SELECT pg_notify(:channel, :topic)"),
                {"channel": NOTIFY_CHANNEL, "topic": topic},
            )

    def subscribe(self, group: str, topics: Sequence[str]) -> Subscription:
        return PostgresSubscription(self, group, topics)


class PostgresSubscription(Subscription):
    """One consumer of a group; several may run and split the partitions between them."""

    def __init__(self, transport: PostgresTransport, group: str, topics: Sequence[str]) -> None:
        self.transport = transport
        self.group = group
        self.topics = list(topics)
        self._wakeup = asyncio.Event()
        self._listener: AsyncConnection | None = None
        self._claimed: list[tuple[str, int, int]] = []

    async def start(self) -> None:
        async with self.transport.engine.begin() as connection:
            for topic in self.topics:
                partitions = await self.transport.partitions_of(connection, topic)
                await connection.execute(
                    text(
                        f"INSERT INTO {SCHEMA}.consumer_offsets (consumer_group, topic, partition) "
                        "SELECT :group, :topic, p FROM generate_series(0, :last) AS p "
                        "ON CONFLICT DO NOTHING"
                    ),
                    {"group": self.group, "topic": topic, "last": partitions - 1},
                )
        self._listener = await self.transport.engine.connect()
        raw = await self._listener.get_raw_connection()
        driver: Any = raw.driver_connection
        await driver.add_listener(NOTIFY_CHANNEL, self._on_notify)
        self._wakeup.set()  # look once at start: records may have arrived while we were away

    def _on_notify(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        if payload in self.topics:
            self._wakeup.set()

    async def stop(self) -> None:
        if self._listener is not None:
            try:
                raw = await self._listener.get_raw_connection()
                driver: Any = raw.driver_connection
                await driver.remove_listener(NOTIFY_CHANNEL, self._on_notify)
            except (OSError, DBAPIError, OperationalError):
                pass  # the connection is gone; nothing to unregister
            await self._listener.close()
            self._listener = None

    def wake(self) -> None:
        self._wakeup.set()

    async def wait(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._wakeup.wait(), timeout)
        except TimeoutError:
            pass
        self._wakeup.clear()

    async def fetch(self, session: AsyncSession, max_records: int) -> list[Record]:
        claimed = (
            await session.execute(
                # Only partitions with something new are claimed, so a wake-up with
                # nothing to do, or a partition another member holds, costs no lock wait.
                text(
                    f"SELECT o.topic, o.partition, o.next_offset FROM {SCHEMA}.consumer_offsets o "
                    f"JOIN {SCHEMA}.partition_heads h "
                    "ON h.topic = o.topic AND h.partition = o.partition "
                    "WHERE o.consumer_group = :group AND o.topic = ANY(:topics) "
                    "AND o.next_offset < h.next_offset "
                    "ORDER BY o.topic, o.partition FOR UPDATE OF o SKIP LOCKED"
                ),
                {"group": self.group, "topics": self.topics},
            )
        ).all()
        records: list[Record] = []
        # Share the batch between partitions so that a busy one does not starve the rest.
        per_partition = max(1, -(-max_records // max(1, len(claimed))))
        for topic, partition, next_offset in claimed:
            if len(records) >= max_records:
                break
            rows = (
                await session.execute(
                    text(
                        f'SELECT "offset", key, value FROM {SCHEMA}.event_log '
                        'WHERE topic = :topic AND partition = :partition AND "offset" >= :start '
                        'ORDER BY "offset" LIMIT :limit'
                    ),
                    {
                        "topic": topic,
                        "partition": partition,
                        "start": next_offset,
                        "limit": min(per_partition, max_records - len(records)),
                    },
                )
            ).all()
            records.extend(
                Record(topic, partition, int(offset), key, bytes(value))
                for offset, key, value in rows
            )
        if records:
            self._wakeup.set()  # more may be waiting; do not sleep before the next batch
        return records

    async def stage_offsets(self, session: AsyncSession, records: Sequence[Record]) -> None:
        latest: dict[tuple[str, int], int] = {}
        for record in records:
            key = (record.topic, record.partition)
            latest[key] = max(latest.get(key, -1), record.offset)
        for (topic, partition), offset in sorted(latest.items()):
            await session.execute(
                text(
                    f"UPDATE {SCHEMA}.consumer_offsets SET next_offset = :next, updated_at = now() "
                    "WHERE consumer_group = :group AND topic = :topic AND partition = :partition"
                ),
                {"next": offset + 1, "group": self.group, "topic": topic, "partition": partition},
            )
