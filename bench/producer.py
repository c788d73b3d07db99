"""The load generator: writes `PingRecorded` events into the outbox, from a process of its own.

It runs in a separate (spawned) process so that its own CPU (building envelopes, one
INSERT per event through SQLAlchemy) is not charged to the relay and consumers under
measurement; in production the writers are API processes too. It reports, for every
event, the moment its transaction's COMMIT returned, on `time.monotonic()`: on Linux that
is CLOCK_MONOTONIC, one clock for every process on the machine, so the consumer side
can subtract it from its own readings.

This module is imported by name in the child process, so everything it sends back is a
plain value (no classes defined in `__main__`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass

from shared.db.engine import create_engine, session_factory
from shared.logging import configure_logging
from shared.pipeline.outbox import add_event
from tests.pipeline.harness import SCHEMA, PingRecorded

SOURCE = "bench"
SUBJECTS_PER_WORKER = 1000
"""Distinct subjects per worker: enough to spread over partitions.

Each worker has subjects of its own, because `add_envelope` takes an advisory lock per
subject until commit: workers that shared subjects in different orders would deadlock.
"""


@dataclass(frozen=True)
class LoadPlan:
    """How much to write and how fast.

    `interval` is the time between the scheduled starts of consecutive transactions
    (open loop: a late transaction does not push the schedule back); `None` writes as
    fast as the workers can.
    """

    database_url: str
    transactions: int
    per_transaction: int
    workers: int
    interval: float | None


@dataclass(frozen=True)
class LoadReport:
    """Per event: its id (hex) and when its outbox transaction committed; plus our CPU."""

    event_ids: list[str]
    committed_at: list[float]
    cpu_seconds: float


def run_load(plan: LoadPlan) -> LoadReport:
    """Entry point in the child process."""
    configure_logging("WARNING", json=False)
    return asyncio.run(_run(plan))


def warm_up() -> None:
    """Called once so the pool spawns its process (and imports) before anything is timed."""


async def _run(plan: LoadPlan) -> LoadReport:
    engine = create_engine(plan.database_url, pool_size=plan.workers)
    sessions = session_factory(engine)
    event_ids: list[str] = []
    committed_at: list[float] = []
    slots: Iterator[int] = iter(range(plan.transactions))

    async def connect() -> None:
        async with engine.connect():
            await asyncio.sleep(0.05)  # hold it so that the workers' connections all open

    async def worker(number: int) -> None:
        written = 0
        for slot in slots:  # one iterator shared by all workers: each slot is taken once
            if plan.interval is not None:
                delay = started + slot * plan.interval - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            batch: list[str] = []
            async with sessions() as session, session.begin():
                for _ in range(plan.per_transaction):
                    ping = PingRecorded(
                        entity=f"w{number}-s{written % SUBJECTS_PER_WORKER}", seq=written
                    )
                    envelope = await add_event(session, SCHEMA, ping, source=SOURCE)
                    batch.append(envelope.id.hex)
                    written += 1
            now = time.monotonic()
            event_ids.extend(batch)
            committed_at.extend([now] * len(batch))

    try:
        await asyncio.gather(*(connect() for _ in range(plan.workers)))
        cpu_before = time.process_time()
        started = time.monotonic()
        await asyncio.gather(*(worker(n) for n in range(plan.workers)))
        cpu = time.process_time() - cpu_before
    finally:
        await engine.dispose()
    return LoadReport(event_ids, committed_at, cpu)
