"""The event contract: the committed AsyncAPI document, the registry's rules, handlers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import ValidationError

from crm.services import ALL_SERVICES
from shared.events import EVENTS, Event, EventEnvelope, EventRegistry, UnknownEventVersion
from shared.events.contacts import CustomerSignedUp, ProfileSnapshot
from shared.events.schema import asyncapi_document, render
from shared.settings import Settings

PROFILE = ProfileSnapshot(given_name="Aisyah", email="aisyah@example.my")
COMMITTED = Path(__file__).parents[2] / "docs" / "events" / "asyncapi.json"


def test_committed_asyncapi_document_matches_the_models() -> None:
    assert COMMITTED.read_text() == render(EVENTS), (
        "the event models changed: run `crm events schema --output docs/events/asyncapi.json`"
        " and commit the diff"
    )


def test_document_lists_every_type_on_its_topic() -> None:
    document = asyncapi_document(EVENTS)
    for model in EVENTS.models():
        channel = document["channels"][model.topic]
        assert f"{model.event_type}.v{model.schema_version}" in channel["messages"]
    assert document["channels"]["crm.purchases"]["address"] == "crm.purchases"


def test_every_handled_event_type_is_registered() -> None:
    for service in ALL_SERVICES:
        for model in service.handlers_for(Settings()):
            assert model in service.registry.models(), f"{service.name} handles {model}"


def test_registry_refuses_a_second_model_for_one_type_and_version() -> None:
    registry = EventRegistry()
    registry.register(CustomerSignedUp)

    class Impostor(Event):
        event_type: ClassVar[str] = "customer.signed_up"
        topic: ClassVar[str] = "crm.contacts"

    with pytest.raises(ValueError, match="already registered"):
        registry.register(Impostor)


def test_envelope_round_trip_and_subject_is_the_customer() -> None:
    customer = uuid.uuid4()
    event = CustomerSignedUp(
        customer_id=customer, profile=PROFILE, source="pos", signed_up_at=datetime.now(UTC)
    )
    envelope = event.to_envelope(source="contacts")
    assert envelope.subject == str(customer)
    parsed = EVENTS.parse(EventEnvelope.model_validate_json(envelope.model_dump_json()))
    assert parsed == event


def test_unknown_version_and_bad_data_are_refused() -> None:
    envelope = CustomerSignedUp(
        customer_id=uuid.uuid4(), profile=PROFILE, source="api", signed_up_at=datetime.now(UTC)
    ).to_envelope(source="contacts")
    with pytest.raises(UnknownEventVersion):
        EVENTS.parse(envelope.model_copy(update={"schema_version": 7}))
    with pytest.raises(ValidationError):
        EVENTS.parse(envelope.model_copy(update={"data": {"customer_id": "not-a-uuid"}}))


def test_envelope_needs_an_aware_time() -> None:
    with pytest.raises(ValidationError):
        EventEnvelope(
            id=uuid.uuid4(),
            type="x.y",
            source="s",
            time=datetime(2026, 1, 1),  # naive: refused
            subject="s",
            data={},
        )
