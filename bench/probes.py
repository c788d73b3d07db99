"""Timing taps on the real pipeline: when each event was relayed and when it was applied.

Nothing here changes what the pipeline does; the taps only read the clock
(`time.monotonic()`, on Linux one clock for every process on the machine, so readings
from the producer process subtract from readings here) and note event ids.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import event as orm_event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from shared.events.envelope import EventEnvelope
from shared.pipeline.consumer import BatchHandler, Run
from shared.pipeline.transports.base import OutgoingMessage, Subscription, Transport
from tests.pipeline.harness import PingRecorded, record_ping, record_pings

APPLIED = "bench.applied"
"""`session.info` key: ids of the events the open consumer transaction applied."""
ID_PREFIX = b'{"id":"'
ID_SLICE = slice(len(ID_PREFIX), len(ID_PREFIX) + 36)
"""Where the event id sits in an envelope's JSON (`model_dump_json` writes `id` first)."""


@dataclass
class Probe:
    """When each event's handler transaction committed, and which group member did it."""

    applied: dict[str, float] = field(default_factory=dict)
    by_member: Counter[int] = field(default_factory=Counter)
    progress: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, ids: Sequence[str], member: int, now: float) -> None:
        """Note `ids` as applied at `now`; a redelivered id keeps its first time."""
        for event_id in ids:
            self.applied.setdefault(event_id, now)
        self.by_member[member] += len(ids)
        self.progress.set()

    def reset(self) -> None:
        """Forget everything so far (the warm-up)."""
        self.applied.clear()
        self.by_member.clear()

    async def wait_for(self, count: int, stall: float) -> bool:
        """Wait until `count` events are applied; False when none came for `stall` s."""
        while len(self.applied) < count:
            self.progress.clear()
            try:
                await asyncio.wait_for(self.progress.wait(), stall)
            except TimeoutError:
                return False
        return True


class ProbedSession(Session):
    """The consumers' session class: the listeners below time its commits.

    `info` must hold `probe` (a `Probe`), `member` (the group member's number), `group`
    (for the test handler) and `work` (whether the handler writes its row).
    """


@orm_event.listens_for(ProbedSession, "after_commit")
def _after_commit(session: Session) -> None:
    # Runs once COMMIT has returned from the server: the handler's effects and inbox rows
    # are durable and visible from this moment.
    ids = session.info.pop(APPLIED, None)
    if ids:
        session.info["probe"].record(ids, session.info["member"], time.monotonic())


@orm_event.listens_for(ProbedSession, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(APPLIED, None)  # the consumer retries these: they were not applied


async def apply_ping(session: AsyncSession, event: PingRecorded, envelope: EventEnvelope) -> None:
    """The bench handler: the test handler's row (unless `work` is off), then note the id."""
    if session.info["work"]:
        await record_ping(session, event, envelope)
    session.info.setdefault(APPLIED, []).append(envelope.id.hex)


async def apply_pings(session: AsyncSession, run: Run) -> None:
    """The bench's batch handler: the same rows as `apply_ping`, one statement per run."""
    if session.info["work"]:
        await record_pings(session, run)
    session.info.setdefault(APPLIED, []).extend(envelope.id.hex for _, envelope in run)


APPLY_PINGS = BatchHandler(apply_pings)


class TimedTransport(Transport):
    """The real transport, noting when each event was acknowledged to the relay.

    That splits latency into outbox -> transport (relay) and transport -> handler commit
    (consumer). The id is sliced out of the envelope JSON, which starts with it, rather
    than parsed, to keep the tap's own cost off the relay.
    """

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.name = inner.name
        self.last_ack = math.nan
        self.acked: dict[str, float] = {}

    def reset(self) -> None:
        """Forget everything so far (the warm-up)."""
        self.last_ack = math.nan
        self.acked.clear()

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        await self.inner.publish(messages)
        self.last_ack = now = time.monotonic()
        for message in messages:
            if message.value.startswith(ID_PREFIX):
                event_id = message.value[ID_SLICE].replace(b"-", b"").decode()
                self.acked.setdefault(event_id, now)

    async def ping(self) -> None:
        await self.inner.ping()

    def subscribe(self, group: str, topics: Sequence[str]) -> Subscription:
        return self.inner.subscribe(group, topics)


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence (NaN when it is empty)."""
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]
