"""The one interface both transports implement.

A transport publishes batches (returning only once the batch is durable) and hands out
subscriptions for a consumer group. The consumer runner drives a subscription in a fixed
rhythm, so that the PostgreSQL log can commit offsets inside the handler's transaction and
Kafka right after it:

    wait() -> [transaction: fetch() -> handlers -> stage_offsets()] -> commit()
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.engine import DATABASE_FAULTS


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One message for the transport; `key` is the event subject."""

    topic: str
    key: str
    value: bytes


@dataclass(frozen=True, slots=True)
class Record:
    """One message as a consumer receives it, with its position in the log."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes


class TransportError(RuntimeError):
    """The transport could not publish or reach its log; the caller retries later."""


PIPELINE_FAULTS: tuple[type[Exception], ...] = (*DATABASE_FAULTS, TransportError)
"""What the relay and the consumers wait out and retry rather than die of."""


class Subscription(ABC):
    """A consumer group's view of some topics."""

    async def start(self) -> None:
        """Join the group; called once before the first `wait`."""

    async def stop(self) -> None:
        """Leave the group."""

    @abstractmethod
    async def wait(self, timeout: float) -> None:
        """Return when records may be ready, or after `timeout` seconds."""

    @abstractmethod
    async def fetch(self, session: AsyncSession, max_records: int) -> list[Record]:
        """Records to apply next, taken inside the session's open transaction."""

    async def stage_offsets(self, session: AsyncSession, records: Sequence[Record]) -> None:
        """Record progress inside the handler transaction, where the log allows it."""

    async def commit(self, records: Sequence[Record]) -> None:
        """Record progress after the handler transaction committed, where it must."""

    async def rewind(self, records: Sequence[Record]) -> None:
        """Make `records` come again after their transaction failed."""

    def wake(self) -> None:
        """Make a pending `wait` return early (used at shutdown)."""


class Transport(ABC):
    """Moves events from relays to consumer groups."""

    name: str

    async def start(self) -> None:
        """Connect; create topics where that is allowed."""

    async def stop(self) -> None:
        """Flush and disconnect."""

    @abstractmethod
    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        """Publish `messages` in order and return once all are acknowledged."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise `TransportError` when the transport is unreachable (readiness)."""

    @abstractmethod
    def subscribe(self, group: str, topics: Sequence[str]) -> Subscription:
        """A subscription of `group` to `topics`, not yet started."""
