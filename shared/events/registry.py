"""The registry of event types: the contract between producers and consumers.

The registry is append-only: a type, once published, keeps its name and each schema
version keeps its shape; a change is a new version registered beside the old one.
"""

from __future__ import annotations

from typing import TypeVar

from shared.events.envelope import Event, EventEnvelope

E = TypeVar("E", bound=type[Event])


class UnknownEventVersion(ValueError):
    """A known event type arrived in a schema version this consumer does not know."""


class EventRegistry:
    """Maps (type, schema version) to the pydantic model that validates `data`."""

    def __init__(self) -> None:
        self._models: dict[tuple[str, int], type[Event]] = {}

    def register(self, model: E) -> E:
        """Add `model`; usable as a class decorator."""
        key = (model.event_type, model.schema_version)
        existing = self._models.get(key)
        if existing is not None and existing is not model:
            raise ValueError(f"event {key} is already registered as {existing.__name__}")
        self._models[key] = model
        return model

    def include(self, other: EventRegistry) -> None:
        """Add every model of `other` (used to extend the product registry in tests)."""
        for model in other.models():
            self.register(model)

    def models(self) -> list[type[Event]]:
        """Every registered model, ordered by type and version."""
        return [self._models[key] for key in sorted(self._models)]

    def knows_type(self, event_type: str) -> bool:
        """True when some version of `event_type` is registered."""
        return any(name == event_type for name, _ in self._models)

    def topics(self) -> list[str]:
        """Every topic some registered event is published on."""
        return sorted({model.topic for model in self._models.values()})

    def parse(self, envelope: EventEnvelope) -> Event:
        """Validate the envelope's `data` against the model of its type and version.

        Raises `UnknownEventVersion` or pydantic's `ValidationError`; the consumer sends
        such messages to the dead-letter topic.
        """
        model = self._models.get((envelope.type, envelope.schema_version))
        if model is None:
            raise UnknownEventVersion(
                f"{envelope.type} version {envelope.schema_version} is not known here"
            )
        return model.model_validate(envelope.data)

    def by_type(self) -> dict[str, list[type[Event]]]:
        """Models grouped by type name, for schema documents."""
        grouped: dict[str, list[type[Event]]] = {}
        for model in self.models():
            grouped.setdefault(model.event_type, []).append(model)
        return grouped


EVENTS = EventRegistry()
"""The product's registry; each `shared/events/<domain>.py` module registers into it."""
