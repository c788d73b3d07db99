"""The parts one process needs, built from settings at start and closed at stop.

A `Runtime` resolves each service's database (the embedded server when no URL is set),
holds the engines and the transport, migrates schemas, and runs workers: relays and
consumers. API processes and worker processes both build one; `crm up` builds one for
all five services.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.db.embedded import EmbeddedServer, asyncpg_url, ensure_database
from shared.db.engine import Engines, session_factory
from shared.db.migrations import migrate
from shared.events.platform import DEAD_LETTER_TOPIC
from shared.jobs import JobRunner
from shared.pipeline.consumer import ConsumerRunner
from shared.pipeline.relay import Relay
from shared.pipeline.transports.base import Transport
from shared.pipeline.transports.kafka import KafkaTransport
from shared.pipeline.transports.postgres import PostgresTransport
from shared.service import ServiceDefinition
from shared.settings import Settings

log = structlog.get_logger(__name__)


class ConfigurationError(RuntimeError):
    """The settings cannot work together; raised at start, before anything runs."""


class Runtime:
    """Engines, sessions and the transport for a set of services."""

    def __init__(self, settings: Settings, services: Sequence[ServiceDefinition]) -> None:
        self.settings = settings
        self.services = {service.name: service for service in services}
        self.engines = Engines(settings.database_pool_size)
        self._urls: dict[str, str] = {}
        self._default = ""
        self._embedded: EmbeddedServer | None = None
        self._sessions: dict[str, async_sessionmaker[AsyncSession]] = {}
        self.transport: Transport | None = None
        self._workers: list[tuple[Relay | ConsumerRunner | JobRunner, asyncio.Task[None]]] = []

    async def start(self, *, migrate_schemas: bool = True) -> None:
        """Resolve databases, migrate, and connect the transport."""
        await self.open_databases()
        if migrate_schemas:
            await self.migrate()
        self.transport = self._make_transport(self._default)
        await self.transport.start()

    async def open_databases(self) -> None:
        """Decide each service's database, starting the embedded server when none is set."""
        self._default = await self._default_url()
        for name in self.services:
            url = self.settings.database_url_for(name) or self._default
            self._urls[name] = url
            self._sessions[name] = session_factory(self.engines.get(url))

    async def migrate(self, names: Sequence[str] | None = None) -> None:
        """Apply each named service's migrations (all by default) to its own schema."""
        for name in names or list(self.services):
            service = self.services[name]
            await migrate(self.engine(name), service.schema, service.migrations)

    async def _default_url(self) -> str:
        if self.settings.database_url:
            return self.settings.database_url
        self._embedded = await asyncio.to_thread(EmbeddedServer, self.settings.data_dir)
        await ensure_database(self._embedded.url)
        return asyncpg_url(self._embedded.url)

    def _make_transport(self, default_url: str) -> Transport:
        if self.settings.transport == "kafka":
            topics = sorted({*self.registry_topics(), DEAD_LETTER_TOPIC})
            return KafkaTransport(self.settings, topics)
        others = {url for url in self._urls.values() if url != default_url}
        if others:
            raise ConfigurationError(
                "the postgres transport keeps consumer offsets in the services' own "
                "transactions, so every service must use one database; use "
                "CRM_TRANSPORT=kafka for separate databases"
            )
        return PostgresTransport(
            self.engines.get(default_url),
            self.settings.eventlog_partitions,
            retention_hours=self.settings.eventlog_retention_hours,
        )

    def registry_topics(self) -> set[str]:
        """Every topic of every registry the services use."""
        topics: set[str] = set()
        for service in self.services.values():
            topics.update(service.registry.topics())
        return topics

    def engine(self, service: str) -> AsyncEngine:
        """The engine of `service`'s database."""
        return self.engines.get(self._urls[service])

    def sessions(self, service: str) -> async_sessionmaker[AsyncSession]:
        """The session factory of `service`."""
        return self._sessions[service]

    def start_workers(self, names: Sequence[str] | None = None) -> None:
        """Start the relay and the consumer of each named service (all by default)."""
        assert self.transport is not None, "start() first"
        settings = self.settings
        for name in names or list(self.services):
            service = self.services[name]
            relay = Relay(
                self.engine(name),
                service.schema,
                self.transport,
                batch_size=settings.relay_batch_size,
                poll_interval=settings.relay_poll_interval_seconds,
                idle_poll_interval=settings.relay_idle_poll_interval_seconds,
            )
            self._spawn(relay, f"relay:{name}")
            for job in service.jobs:
                runner_of_job = JobRunner(
                    job, name, self.engine(name), self.sessions(name), self.settings
                )
                self._spawn(runner_of_job, f"job:{name}:{job.name}")
            group = service.consumer_group(settings)
            if group is None:
                continue
            runner = ConsumerRunner(
                group,
                self.transport.subscribe(group.name, group.topics),
                self.sessions(name),
                batch_size=settings.consumer_batch_size,
                max_attempts=settings.consumer_max_attempts,
                retry_backoff=settings.consumer_retry_backoff_seconds,
                poll_interval=settings.consumer_poll_interval_seconds,
            )
            self._spawn(runner, f"consumer:{name}")

    def _spawn(self, worker: Relay | ConsumerRunner | JobRunner, name: str) -> None:
        task = asyncio.create_task(worker.run(), name=name)
        task.add_done_callback(_report_crash)
        self._workers.append((worker, task))

    def failed_workers(self) -> list[str]:
        """Workers that ended although nobody stopped them; a liveness probe must fail."""
        return [task.get_name() for _, task in self._workers if task.done()]

    async def stop_workers(self) -> None:
        """Let each worker finish the batch in hand; cancel what outlives the grace period."""
        for worker, _ in self._workers:
            worker.stop()
        tasks = [task for _, task in self._workers]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.settings.shutdown_grace_seconds)
            for task in pending:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._workers.clear()

    async def stop(self) -> None:
        """Stop workers, the transport and the pools."""
        await self.stop_workers()
        if self.transport is not None:
            await self.transport.stop()
            self.transport = None
        await self.engines.dispose()
        if self._embedded is not None:
            await asyncio.to_thread(self._embedded.release)
            self._embedded = None


def _report_crash(task: asyncio.Task[None]) -> None:
    """Workers retry transient faults themselves; anything that kills one must be seen."""
    if not task.cancelled() and task.exception() is not None:
        log.error("worker.crashed", worker=task.get_name(), error=repr(task.exception()))
