"""What a service tells the platform about itself.

Each service package exposes one `ServiceDefinition`; the `crm` command (the composition
root) collects them. The platform gives every service the same HTTP conventions, its own
schema and migration history, an outbox relay and, when it handles events, a consumer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import APIRouter

from shared.events.envelope import Event
from shared.events.registry import EVENTS, EventRegistry
from shared.jobs import ScheduledJob
from shared.pipeline.consumer import ConsumerGroup, Handler
from shared.settings import Settings


@dataclass(frozen=True)
class ServiceDefinition:
    """A service: name (also its schema and URL prefix), routes, migrations, handlers."""

    name: str
    routes: Callable[[], APIRouter]
    migrations: Path
    handlers: Mapping[type[Event], Handler] = field(default_factory=dict)
    handler_factory: Callable[[Settings], Mapping[type[Event], Handler]] | None = None
    """For handlers that need settings; takes the place of `handlers` when given."""
    registry: EventRegistry = EVENTS
    jobs: Sequence[ScheduledJob] = ()
    schema: str = ""

    def __post_init__(self) -> None:
        if not self.schema:
            object.__setattr__(self, "schema", self.name)

    @property
    def prefix(self) -> str:
        """The URL prefix every route of this service lives under."""
        return f"/v1/{self.name}"

    def handlers_for(self, settings: Settings) -> Mapping[type[Event], Handler]:
        """The routing table of event models to handlers, for these settings."""
        if self.handler_factory is not None:
            return self.handler_factory(settings)
        return self.handlers

    def consumer_group(self, settings: Settings) -> ConsumerGroup | None:
        """The service's consumer group, or None when it handles no events."""
        handlers = self.handlers_for(settings)
        if not handlers:
            return None
        return ConsumerGroup(
            name=f"crm.{self.name}",
            schema=self.schema,
            source=self.name,
            handlers=handlers,
            registry=self.registry,
        )
