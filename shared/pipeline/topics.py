"""Creating the topics the services use, ahead of deployment (`crm topics ensure`).

The Kafka transport can create its topics at start (`kafka_create_topics`), but a
production cluster usually forbids that to application credentials; this module does it
once, from a job with admin rights. Existing topics are left alone: partitions and
replication of a live topic are an operator's decision, not a deploy's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import TopicAlreadyExistsError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.pipeline.transports.kafka import client_options, new_topic
from shared.pipeline.transports.postgres import SCHEMA as EVENTLOG_SCHEMA
from shared.pipeline.transports.postgres import PostgresTransport
from shared.settings import Settings

__all__ = ["TopicReport", "ensure_eventlog_topics", "ensure_kafka_topics"]


@dataclass
class TopicReport:
    """Which topics were created now and which existed already."""

    created: list[str] = field(default_factory=list)
    existed: list[str] = field(default_factory=list)


async def ensure_kafka_topics(settings: Settings, topics: Sequence[str]) -> TopicReport:
    """Create each of `topics` missing on the cluster, with the configured partitions,
    replication factor and retention; safe to run twice and from two processes at once."""
    report = TopicReport()
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        for name in sorted(set(topics)):
            if name in existing:
                report.existed.append(name)
                continue
            try:
                await admin.create_topics([new_topic(settings, name)])
                report.created.append(name)
            except TopicAlreadyExistsError:
                report.existed.append(name)  # another process created it first
    finally:
        await admin.close()
    return report


async def ensure_eventlog_topics(
    engine: AsyncEngine, partitions: int, topics: Sequence[str]
) -> TopicReport:
    """Migrate the PostgreSQL event log and fix each topic's partition count in it.

    A topic's partition count is fixed the first time it is used; this fixes it to
    `partitions` now, so it does not depend on which process publishes first.
    """
    transport = PostgresTransport(engine, partitions)
    await transport.start()
    report = TopicReport()
    try:
        async with engine.begin() as connection:
            rows = await connection.execute(text(f"SELECT name FROM {EVENTLOG_SCHEMA}.topics"))
            existing = set(rows.scalars())
            for name in sorted(set(topics)):
                await transport.partitions_of(connection, name)
                (report.existed if name in existing else report.created).append(name)
    finally:
        await transport.stop()
    return report
