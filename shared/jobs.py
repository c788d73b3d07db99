"""Scheduled jobs (points expiry, tier reviews, birthday triggers, refits) run by workers.

Each job runs every `interval_seconds` in every worker process of its service, but one at
a time across them: a run first takes a PostgreSQL advisory lock named after the job and
skips the round when another process holds it. A job does its work in transactions of
its own and must be safe to run again after a crash (it is, when it works from the
database's state rather than from a memory of what it did).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.db.engine import DATABASE_FAULTS
from shared.settings import Settings

log = structlog.get_logger(__name__)

JobFunction = Callable[[async_sessionmaker[AsyncSession], Settings], Awaitable[int]]
"""`async def job(sessions, settings) -> int`: the number of items it handled."""


@dataclass(frozen=True)
class ScheduledJob:
    """A named periodic job of a service."""

    name: str
    interval_seconds: float
    run: JobFunction


class JobRunner:
    """Runs one job periodically until stopped."""

    def __init__(
        self,
        job: ScheduledJob,
        service: str,
        engine: AsyncEngine,
        sessions: async_sessionmaker[AsyncSession],
        settings: Settings,
    ) -> None:
        self.job = job
        self.lock_name = f"crm.job.{service}.{job.name}"
        self.engine = engine
        self.sessions = sessions
        self.settings = settings
        self._stopping = asyncio.Event()
        self.runs = 0

    def stop(self) -> None:
        """Finish the run in hand, then return."""
        self._stopping.set()

    async def run(self) -> None:
        """Run the job every interval until `stop()`."""
        while not self._stopping.is_set():
            await self.run_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.job.interval_seconds)

    async def run_once(self) -> int | None:
        """One round: None when another process holds the job, else items handled."""
        try:
            async with self.engine.connect() as connection:
                held = (
                    await connection.execute(
                        text("SELECT pg_try_advisory_lock(hashtextextended(:name, 0))"),
                        {"name": self.lock_name},
                    )
                ).scalar_one()
                await connection.commit()
                if not held:
                    return None
                try:
                    handled = await self.job.run(self.sessions, self.settings)
                    self.runs += 1
                    if handled:
                        log.info("job.ran", job=self.lock_name, handled=handled)
                    return handled
                finally:
                    await connection.execute(
                        text("SELECT pg_advisory_unlock(hashtextextended(:name, 0))"),
                        {"name": self.lock_name},
                    )
                    await connection.commit()
        except DATABASE_FAULTS as exc:
            log.warning("job.failed", job=self.lock_name, error=str(exc))
            return None
