"""The Kafka transport: aiokafka producer and consumer groups.

Keys are event subjects, so the default partitioner keeps one customer's events on one
partition and in order. Offsets are committed by hand, after the handler transaction has
committed; a crash in between redelivers, and the inbox makes that harmless. Nothing here
relies on Kafka transactions or the idempotent producer.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CommitFailedError,
    KafkaConnectionError,
    KafkaError,
    TopicAlreadyExistsError,
)
from sqlalchemy.ext.asyncio import AsyncSession

from shared.pipeline.transports.base import (
    OutgoingMessage,
    Record,
    Subscription,
    Transport,
    TransportError,
)
from shared.settings import Settings


def new_topic(settings: Settings, name: str) -> NewTopic:
    """Topic `name` as configured: partitions, replication factor and retention."""
    retention_ms = round(settings.kafka_retention_hours * 3600 * 1000)
    return NewTopic(
        name,
        settings.kafka_partitions,
        settings.kafka_replication_factor,
        topic_configs={"retention.ms": str(retention_ms)},
    )


def client_options(settings: Settings) -> dict[str, Any]:
    """Connection options shared by producer, consumers and the admin client."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = ssl.create_default_context()
    if settings.kafka_sasl_mechanism:
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        if settings.kafka_sasl_password is not None:
            options["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return options


class KafkaTransport(Transport):
    """Publishes with acks from all in-sync replicas; consumes with manual commits."""

    name = "kafka"

    def __init__(self, settings: Settings, topics: Sequence[str]) -> None:
        self.settings = settings
        self.topics = list(topics)
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        if self.settings.kafka_create_topics:
            await self.ensure_topics()
        producer = AIOKafkaProducer(
            **client_options(self.settings),
            acks="all",
            enable_idempotence=False,
            linger_ms=2,
        )
        await producer.start()
        self._producer = producer

    async def ensure_topics(self) -> None:
        """Create the known topics that do not exist yet; existing ones are left alone."""
        admin = AIOKafkaAdminClient(**client_options(self.settings))
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            missing = [
                new_topic(self.settings, name) for name in self.topics if name not in existing
            ]
            if missing:
                try:
                    await admin.create_topics(missing)
                except TopicAlreadyExistsError:
                    pass  # another process created them first
        finally:
            await admin.close()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if self._producer is None:
            raise TransportError("the Kafka producer is not started")
        try:
            futures = [
                await self._producer.send(m.topic, m.value, key=m.key.encode()) for m in messages
            ]
            await asyncio.gather(*futures)
        except KafkaError as exc:
            raise TransportError(f"Kafka did not acknowledge the batch: {exc}") from exc

    async def ping(self) -> None:
        if self._producer is None:
            raise TransportError("the Kafka producer is not started")
        try:
            await self._producer.client.fetch_all_metadata()
        except KafkaError as exc:
            raise TransportError(f"Kafka unreachable: {exc}") from exc

    def subscribe(self, group: str, topics: Sequence[str]) -> Subscription:
        return KafkaSubscription(self.settings, group, topics)


class KafkaSubscription(Subscription):
    """A member of a Kafka consumer group; `wait` polls, `fetch` hands over the poll."""

    def __init__(self, settings: Settings, group: str, topics: Sequence[str]) -> None:
        self.settings = settings
        self.group = group
        self.topics = list(topics)
        self._consumer: AIOKafkaConsumer | None = None
        self._buffer: list[Record] = []

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            *self.topics,
            **client_options(self.settings),
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self.settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=self.settings.kafka_heartbeat_interval_ms,
            max_poll_records=self.settings.consumer_batch_size,
            fetch_max_wait_ms=self.settings.kafka_fetch_max_wait_ms,
        )
        await consumer.start()
        self._consumer = consumer

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def wait(self, timeout: float) -> None:
        if self._consumer is None or self._buffer:
            return
        try:
            batches = await self._consumer.getmany(
                timeout_ms=int(timeout * 1000), max_records=self.settings.consumer_batch_size
            )
        except KafkaConnectionError:
            return  # aiokafka reconnects by itself; try again on the next round
        for partition, messages in batches.items():
            self._buffer.extend(
                Record(
                    partition.topic,
                    partition.partition,
                    message.offset,
                    message.key.decode() if message.key is not None else None,
                    message.value or b"",
                )
                for message in messages
            )

    async def fetch(self, session: AsyncSession, max_records: int) -> list[Record]:
        records, self._buffer = self._buffer[:max_records], self._buffer[max_records:]
        return records

    async def rewind(self, records: Sequence[Record]) -> None:
        # Back to the front of the buffer: the consumer's position is already past them.
        # Should the partition have moved to another member meanwhile, both may apply
        # them, and the inbox lets only one through.
        self._buffer[:0] = list(records)

    async def commit(self, records: Sequence[Record]) -> None:
        if self._consumer is None or not records:
            return
        offsets: dict[TopicPartition, int] = {}
        for record in records:
            partition = TopicPartition(record.topic, record.partition)
            offsets[partition] = max(offsets.get(partition, 0), record.offset + 1)
        try:
            await self._consumer.commit(offsets)
        except CommitFailedError:
            # The group rebalanced under us: the new owner will redeliver these records and
            # the inbox will skip them, so there is nothing to undo here.
            self._buffer.clear()
