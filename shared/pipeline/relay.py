"""The relay: moves committed outbox rows to the transport, in id order, then marks them.

One relay per service is active at a time: it holds a session-level advisory lock on a
connection of its own, and standbys retry the lock until the holder goes away. A row is
marked published only after the transport acknowledged it, so a crash in between
publishes it again on restart; consumers deduplicate by event id.

The relay polls (every 20 ms while events flow, backing off to 200 ms when idle; an idle
poll is a look at an empty partial index) rather than being woken by NOTIFY: PostgreSQL
serialises the commits of all transactions that sent a NOTIFY, which would cap every
service's write rate.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared import metrics
from shared.events.platform import EventDeadLettered
from shared.pipeline.transports.base import (
    PIPELINE_FAULTS,
    OutgoingMessage,
    Transport,
)

log = structlog.get_logger(__name__)


class Relay:
    """The outbox relay of one service schema."""

    def __init__(
        self,
        engine: AsyncEngine,
        schema: str,
        transport: Transport,
        *,
        batch_size: int = 500,
        poll_interval: float = 0.02,
        idle_poll_interval: float = 0.2,
        standby_interval: float = 2.0,
        retention_seconds: float = 3600.0,
    ) -> None:
        self.engine = engine
        self.schema = schema
        self.transport = transport
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.idle_poll_interval = max(idle_poll_interval, poll_interval)
        self.standby_interval = standby_interval
        self.retention_seconds = retention_seconds
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self.is_leader = False
        self._last_purge = 0.0

    def stop(self) -> None:
        """Ask the relay to finish the batch in hand and return."""
        self._stopping.set()
        self._wakeup.set()

    async def run(self) -> None:
        """Run until `stop()`: wait for leadership, then relay; survive connection loss."""
        while not self._stopping.is_set():
            try:
                async with self.engine.connect() as connection:
                    if await self._try_lead(connection):
                        await self._lead(connection)
                        return
                    await self.observe_backlog(connection)
            except PIPELINE_FAULTS as exc:
                log.warning("relay.error", schema=self.schema, error=str(exc))
            finally:
                self.is_leader = False
            await self._sleep(self.standby_interval)

    async def _try_lead(self, connection: AsyncConnection) -> bool:
        acquired = (
            await connection.execute(
                text("SELECT pg_try_advisory_lock(hashtextextended(:name, 0))"),
                {"name": f"crm.relay.{self.schema}"},
            )
        ).scalar_one()
        await connection.commit()
        return bool(acquired)

    async def _lead(self, connection: AsyncConnection) -> None:
        self.is_leader = True
        log.info("relay.leading", schema=self.schema)
        try:
            interval = self.poll_interval
            observed = 0.0
            while not self._stopping.is_set():
                moved = await self.relay_batch(connection)
                now = asyncio.get_running_loop().time()
                if moved and now - observed >= 1.0:  # a query per second, not per batch
                    observed = now
                    await self.observe_backlog(connection)
                if moved >= self.batch_size:
                    continue
                # Busy: look again soon. Idle: back off towards the idle interval, which
                # bounds the latency of the first event after a quiet spell.
                interval = (
                    self.poll_interval if moved else min(self.idle_poll_interval, interval * 2)
                )
                await self._sleep(interval)
        finally:
            with contextlib.suppress(OSError, DBAPIError):
                await connection.execute(
                    text("SELECT pg_advisory_unlock(hashtextextended(:name, 0))"),
                    {"name": f"crm.relay.{self.schema}"},
                )
                await connection.commit()

    async def observe_backlog(self, connection: AsyncConnection) -> None:
        """Report how long the oldest unpublished row has waited, in seconds.

        Standbys report it too: when the leader is stuck, its own figure freezes while
        theirs keeps growing, and the alert on the maximum fires.
        """
        age = (
            await connection.execute(
                text(
                    "SELECT extract(epoch FROM clock_timestamp() - created_at)"
                    f' FROM "{self.schema}".outbox WHERE published_at IS NULL'
                    " ORDER BY id LIMIT 1"  # the partial index's order: no scan of the backlog
                )
            )
        ).scalar_one_or_none()
        await connection.commit()
        metrics.OUTBOX_OLDEST_AGE.labels(self.schema).set(float(age or 0))

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._wakeup.wait(), seconds)
        except TimeoutError:
            pass
        self._wakeup.clear()

    async def relay_batch(self, connection: AsyncConnection) -> int:
        """Publish one batch of unpublished rows and mark them; returns how many moved."""
        rows = (
            await connection.execute(
                text(
                    f'SELECT id, topic, key, payload FROM "{self.schema}".outbox '
                    "WHERE published_at IS NULL ORDER BY id LIMIT :limit"
                ),
                {"limit": self.batch_size},
            )
        ).all()
        await connection.commit()
        if not rows:
            metrics.OUTBOX_OLDEST_AGE.labels(self.schema).set(0)
            await self._purge(connection)
            return 0
        await self.transport.publish(
            [OutgoingMessage(topic, key, payload.encode()) for _, topic, key, payload in rows]
        )
        await connection.execute(
            text(f'UPDATE "{self.schema}".outbox SET published_at = now() WHERE id = ANY(:ids)'),
            {"ids": [row[0] for row in rows]},
        )
        await connection.commit()
        metrics.EVENTS_PUBLISHED.labels(self.schema).inc(len(rows))
        return len(rows)

    async def _purge(self, connection: AsyncConnection) -> None:
        """Drop published rows past retention, but for dead letters, at most once a minute,
        when idle."""
        now = asyncio.get_running_loop().time()
        if now - self._last_purge < 60:
            return
        self._last_purge = now
        await connection.execute(
            text(
                f'DELETE FROM "{self.schema}".outbox WHERE published_at IS NOT NULL '
                "AND published_at < now() - make_interval(secs => :seconds) "
                # Dead letters stay: `crm events replay-dead-letters` reads them from here
                # after the fix, which may be days later.
                "AND event_type <> :dead_letter"
            ),
            {"seconds": self.retention_seconds, "dead_letter": EventDeadLettered.event_type},
        )
        await connection.commit()
