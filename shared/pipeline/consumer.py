"""The consumer runner: applies events to a service, each exactly once per consumer group.

A batch of records is applied in one database transaction together with one `inbox` row
per event; a redelivered event finds its inbox row and is skipped. The fast path runs the
whole batch without savepoints; when a handler raises, the batch is rolled back and run
again with a savepoint per event, so one bad event is retried (bounded) and then sent to
the dead-letter topic while the rest of the batch goes in. Messages that do not parse go
to the dead-letter topic at once. Dead letters are written through the service's outbox,
so they are as durable as the batch that gave up on them.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from typing import Any

import structlog
from pydantic import ValidationError
from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared import metrics
from shared.events.envelope import Event, EventEnvelope
from shared.events.platform import DEAD_LETTER_TOPIC, EventDeadLettered
from shared.events.registry import EventRegistry
from shared.pipeline.outbox import add_envelope
from shared.pipeline.tables import platform_tables
from shared.pipeline.transports.base import PIPELINE_FAULTS, Record, Subscription

log = structlog.get_logger(__name__)

Handler = Callable[[AsyncSession, Any, EventEnvelope], Awaitable[None]]
"""`async def handle(session, event, envelope)`: flush, never commit."""

Run = list[tuple[Any, EventEnvelope]]


@dataclass(frozen=True)
class BatchHandler:
    """A handler that applies a run of consecutive events in one call.

    A statement per event caps a consumer at a few thousand events a second; set-wise SQL
    over a run lifts that. The runner hands over runs of *consecutive* events with the
    same batch handler, so one subject's order holds across types. When a run fails, the
    batch is re-run one event per call (this object is also an ordinary `Handler`), so
    the bad event is retried and dead-lettered alone.
    """

    apply: Callable[[AsyncSession, Run], Awaitable[None]]

    async def __call__(self, session: AsyncSession, event: Any, envelope: EventEnvelope) -> None:
        await self.apply(session, [(event, envelope)])


@dataclass(frozen=True)
class ConsumerGroup:
    """What a service consumes: its routing table of event models to handlers."""

    name: str
    schema: str
    source: str
    handlers: Mapping[type[Event], Handler]
    registry: EventRegistry

    @property
    def topics(self) -> list[str]:
        """The topics the handled event types are published on."""
        return sorted({model.topic for model in self.handlers})

    @cached_property
    def _routes(self) -> dict[tuple[str, int], tuple[type[Event], Handler]]:
        """(type, version) -> (model, handler): every record is routed, so look up once."""
        return {
            (model.event_type, model.schema_version): (model, handler)
            for model, handler in self.handlers.items()
        }

    @cached_property
    def _types(self) -> frozenset[str]:
        return frozenset(model.event_type for model in self.handlers)

    def handler_for(self, envelope: EventEnvelope) -> tuple[type[Event], Handler] | None:
        """The model and handler for this type and version, if the group handles it."""
        return self._routes.get((envelope.type, envelope.schema_version))

    def handles_type(self, event_type: str) -> bool:
        """True when some version of `event_type` has a handler here."""
        return event_type in self._types


class _HandlerFailed(Exception):
    """A handler raised on the fast path; the batch is re-run with savepoints."""


@dataclass
class _Parsed:
    record: Record
    envelope: EventEnvelope | None = None
    model: type[Event] | None = None
    handler: Handler | None = None
    event: Event | None = None
    problem: str | None = None
    repeat: bool = False  # the batch carries this event id earlier too


class ConsumerRunner:
    """Drives one subscription until stopped; see the module docstring for the guarantees."""

    def __init__(
        self,
        group: ConsumerGroup,
        subscription: Subscription,
        sessions: async_sessionmaker[AsyncSession],
        *,
        batch_size: int = 500,
        max_attempts: int = 3,
        retry_backoff: float = 0.2,
        poll_interval: float = 1.0,
    ) -> None:
        self.group = group
        self.subscription = subscription
        self.sessions = sessions
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.retry_backoff = retry_backoff
        self.poll_interval = poll_interval
        self._stopping = asyncio.Event()
        self.started = asyncio.Event()

    def stop(self) -> None:
        """Finish the batch in hand, then return from `run`."""
        self._stopping.set()
        self.subscription.wake()

    async def run(self) -> None:
        """Consume until `stop()`; transient failures are logged and retried with back-off."""
        await self.subscription.start()
        self.started.set()
        failures = 0
        try:
            while not self._stopping.is_set():
                try:
                    applied = await self.process_batch()
                    failures = 0
                except PIPELINE_FAULTS as exc:
                    failures += 1
                    log.warning("consumer.batch_failed", group=self.group.name, error=str(exc))
                    await asyncio.sleep(min(5.0, self.retry_backoff * 2**failures))
                    continue
                if applied == 0:
                    await self.subscription.wait(self.poll_interval)
        finally:
            await self.subscription.stop()

    async def process_batch(self) -> int:
        """Apply one batch; returns how many records it took (0 when idle)."""
        started = time.perf_counter()
        records = await self._run_transaction(isolate=False)
        if records is None:
            records = await self._run_transaction(isolate=True)
        if records:
            await self.subscription.commit(records)
            metrics.CONSUMER_BATCH_SECONDS.labels(self.group.name).observe(
                time.perf_counter() - started
            )
        return len(records or [])

    async def _run_transaction(self, *, isolate: bool) -> list[Record] | None:
        records: list[Record] = []
        try:
            async with self.sessions() as session, session.begin():
                records = await self.subscription.fetch(session, self.batch_size)
                if not records:
                    return []
                outcomes = await self._apply(session, records, isolate=isolate)
                await self.subscription.stage_offsets(session, records)
        except _HandlerFailed:
            await self.subscription.rewind(records)
            return None
        except BaseException:
            await self.subscription.rewind(records)
            raise
        for outcome, count in outcomes.items():
            metrics.EVENTS_CONSUMED.labels(self.group.name, outcome).inc(count)
        return records

    async def _apply(
        self, session: AsyncSession, records: Sequence[Record], *, isolate: bool
    ) -> dict[str, int]:
        outcomes: dict[str, int] = {}

        def count(outcome: str) -> None:
            outcomes[outcome] = outcomes.get(outcome, 0) + 1

        parsed = [self._parse(record) for record in records]
        fresh = await self._claim_inbox(session, [p for p in parsed if p.event is not None])
        run: list[_Parsed] = []

        async def flush_run() -> None:
            if not run:
                return
            handler = run[0].handler
            assert isinstance(handler, BatchHandler)
            try:
                await handler.apply(
                    session, [(p.event, p.envelope) for p in run if p.envelope is not None]
                )
            except Exception as exc:
                log.info("consumer.batch_failed_fast_path", size=len(run), error=repr(exc))
                raise _HandlerFailed from exc
            for _ in run:
                count("applied")
            run.clear()

        for item in parsed:
            if item.problem is not None:
                await self._dead_letter(session, item, item.problem, attempts=0)
                count("dead_lettered")
                continue
            if item.event is None or item.envelope is None or item.handler is None:
                count("ignored")
                continue
            if item.repeat or item.envelope.id not in fresh:
                count("duplicate")
                continue
            if not isolate and isinstance(item.handler, BatchHandler):
                if run and run[0].handler is not item.handler:
                    await flush_run()
                run.append(item)
                continue
            await flush_run()
            structlog.contextvars.bind_contextvars(
                event_id=str(item.envelope.id), event_type=item.envelope.type
            )
            try:
                if not isolate:
                    try:
                        await item.handler(session, item.event, item.envelope)
                    except Exception as exc:
                        log.info("consumer.handler_failed_fast_path", error=repr(exc))
                        raise _HandlerFailed from exc
                    count("applied")
                elif await self._apply_isolated(session, item):
                    count("applied")
                else:
                    count("dead_lettered")
            finally:
                structlog.contextvars.unbind_contextvars("event_id", "event_type")
        await flush_run()
        return outcomes

    async def _apply_isolated(self, session: AsyncSession, item: _Parsed) -> bool:
        assert item.handler is not None
        assert item.envelope is not None
        error: Exception | None = None
        for attempt in range(1, self.max_attempts + 1):
            try:
                async with session.begin_nested():
                    await item.handler(session, item.event, item.envelope)
                return True
            except Exception as exc:
                error = exc
                log.warning("consumer.handler_failed", attempt=attempt, error=repr(exc))
                if attempt < self.max_attempts:
                    await asyncio.sleep(self.retry_backoff * attempt)
        reason = f"handler failed after {self.max_attempts} attempts: {error!r}"
        inbox = platform_tables(self.group.schema).inbox
        await session.execute(
            inbox.update()
            .where(
                inbox.c.consumer_group == self.group.name,
                inbox.c.event_id == item.envelope.id,
            )
            .values(outcome="dead_lettered")
        )
        await self._dead_letter(session, item, reason, attempts=self.max_attempts)
        return False

    def _parse(self, record: Record) -> _Parsed:
        item = _Parsed(record)
        try:
            item.envelope = EventEnvelope.model_validate_json(record.value)
        except ValidationError as exc:
            item.problem = f"not an event envelope: {_short(exc)}"
            return item
        if not self.group.handles_type(item.envelope.type):
            return item  # unknown or not ours: ignored, as the contract says
        found = self.group.handler_for(item.envelope)
        if found is None:
            item.problem = (
                f"{item.envelope.type} version {item.envelope.schema_version} "
                "is not a version this consumer knows"
            )
            return item
        item.model, item.handler = found
        try:
            item.event = item.model.model_validate(item.envelope.data)
        except ValidationError as exc:
            item.problem = f"invalid {item.envelope.type} data: {_short(exc)}"
        return item

    async def _claim_inbox(self, session: AsyncSession, items: Sequence[_Parsed]) -> set[uuid.UUID]:
        """Insert inbox rows for the batch in one statement; returns the ids not seen before."""
        envelopes = {i.envelope.id: i.envelope for i in items if i.envelope is not None}
        if not envelopes:
            return set()
        result = await session.execute(
            _inbox_statement(self.group.schema),
            {
                "group": self.group.name,
                "ids": list(envelopes),
                "types": [e.type for e in envelopes.values()],
            },
        )
        fresh = set(result.scalars())
        # A batch may carry one event twice (a relay re-sent it): only the first counts.
        seen: set[uuid.UUID] = set()
        for item in items:
            assert item.envelope is not None
            item.repeat = item.envelope.id in seen
            seen.add(item.envelope.id)
        return fresh

    async def _dead_letter(
        self, session: AsyncSession, item: _Parsed, reason: str, attempts: int
    ) -> None:
        record = item.record
        try:
            payload, encoding = record.value.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            payload, encoding = base64.b64encode(record.value).decode(), "base64"
        letter = EventDeadLettered(
            consumer_group=self.group.name,
            original_topic=record.topic,
            original_partition=record.partition,
            original_offset=record.offset,
            original_key=record.key or "-",
            original_event_id=str(item.envelope.id) if item.envelope else None,
            original_type=item.envelope.type if item.envelope else None,
            reason=reason,
            attempts=attempts,
            payload=payload,
            payload_encoding=encoding,
        )
        # The id is derived from the record's position, so a redelivered bad record yields
        # the same dead letter, which the outbox's unique event id then refuses.
        letter_id = uuid.uuid5(
            uuid.NAMESPACE_URL,
            f"crm:{self.group.name}:{record.topic}:{record.partition}:{record.offset}",
        )
        envelope = letter.to_envelope(source=self.group.source, event_id=letter_id)
        await add_envelope(
            session, self.group.schema, envelope, topic=DEAD_LETTER_TOPIC, skip_existing=True
        )
        log.warning(
            "consumer.dead_lettered",
            group=self.group.name,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            reason=reason,
        )


@cache
def _inbox_statement(schema: str) -> TextClause:
    # A fixed statement (arrays, not a VALUES list of varying length) compiles once.
    return text(
        f'INSERT INTO "{schema}".inbox (consumer_group, event_id, event_type) '
        "SELECT :group, u.id, u.type "
        "FROM unnest(CAST(:ids AS uuid[]), CAST(:types AS text[])) AS u(id, type) "
        "ON CONFLICT DO NOTHING RETURNING event_id"
    )


def _short(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in error.errors()
    )[:500]
