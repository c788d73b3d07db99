"""What a service tells the platform about itself.

Each service package exposes one `ServiceDefinition`; the `crm` command (the composition
root) collects them. The platform gives every service the same HTTP conventions, its own
schema and migration history, an outbox relay and, when it handles events, a consumer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import APIRouter

from shared.events.envelope import Event
from shared.events.registry import EVENTS, EventRegistry
from shared.pipeline.consumer import ConsumerGroup, Handler


@dataclass(frozen=True)
class ServiceDefinition:
    """A service: name (also its schema and URL prefix), routes, migrations, handlers."""

    name: str
    routes: Callable[[], APIRouter]
    migrations: Path
    handlers: Mapping[type[Event], Handler] = field(default_factory=dict)
    registry: EventRegistry = EVENTS
    schema: str = ""

    def __post_init__(self) -> None:
        if not self.schema:
            object.__setattr__(self, "schema", self.name)

    @property
    def prefix(self) -> str:
        """The URL prefix every route of this service lives under."""
        return f"/v1/{self.name}"

    @property
    def consumer_group(self) -> ConsumerGroup | None:
        """The service's consumer group, or None when it handles no events."""
        if not self.handlers:
            return None
        return ConsumerGroup(
            name=f"crm.{self.name}",
            schema=self.schema,
            source=self.name,
            handlers=self.handlers,
            registry=self.registry,
        )
