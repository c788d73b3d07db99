"""Scheduled jobs run periodically, one process at a time."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db.engine import create_engine, session_factory
from shared.jobs import JobRunner, ScheduledJob
from shared.settings import Settings


async def test_one_runner_at_a_time_and_stop(database_url: str) -> None:
    engine = create_engine(database_url)
    running = 0
    overlaps = 0
    calls = 0

    async def slow(_: async_sessionmaker[AsyncSession], __: Settings) -> int:
        nonlocal running, overlaps, calls
        running += 1
        calls += 1
        overlaps = max(overlaps, running)
        await asyncio.sleep(0.2)
        running -= 1
        return 1

    job = ScheduledJob("slow", interval_seconds=0.05, run=slow)
    settings = Settings(database_url=database_url)
    runners = [JobRunner(job, "test", engine, session_factory(engine), settings) for _ in range(3)]
    tasks = [asyncio.create_task(r.run()) for r in runners]
    await asyncio.sleep(1.0)
    for runner in runners:
        runner.stop()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    await engine.dispose()
    assert overlaps == 1, "the advisory lock lets one process run the job at a time"
    assert calls >= 3, "the job runs again after its interval"
