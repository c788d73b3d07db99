"""The published contract: an AsyncAPI 3 document of every topic and event type.

Each message's payload is the envelope with `data` replaced by the JSON Schema of the
event's model. The document is committed (`docs/events/asyncapi.json`) and a test keeps
it equal to what the models generate, so a contract change shows up as a diff.
"""

from __future__ import annotations

import json
from typing import Any

from shared.events.envelope import EventEnvelope
from shared.events.registry import EventRegistry


def _message_name(event_type: str, version: int) -> str:
    return f"{event_type}.v{version}"


def asyncapi_document(registry: EventRegistry) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of `registry`."""
    envelope_schema = EventEnvelope.model_json_schema()
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for model in registry.models():
        name = _message_name(model.event_type, model.schema_version)
        data_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for definition_name, definition in data_schema.pop("$defs", {}).items():
            schemas[definition_name] = definition
        payload = json.loads(json.dumps(envelope_schema))
        payload["title"] = model.__name__
        payload["properties"]["type"] = {"const": model.event_type, "type": "string"}
        payload["properties"]["schema_version"] = {
            "const": model.schema_version,
            "type": "integer",
        }
        payload["properties"]["data"] = data_schema
        messages[name] = {
            "name": model.event_type,
            "title": model.__name__,
            "summary": (model.__doc__ or "").strip().splitlines()[0],
            "contentType": "application/json",
            "payload": payload,
            "headers": {"type": "object", "description": "Kafka key: the event's subject."},
        }
        channel = channels.setdefault(model.topic, {"address": model.topic, "messages": {}})
        channel["messages"][name] = {"$ref": f"#/components/messages/{name}"}
    for topic in sorted(channels):
        refs = [
            {"$ref": f"#/channels/{topic}/messages/{name}"}
            for name in sorted(channels[topic]["messages"])
        ]
        operations[f"publish:{topic}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{topic}"},
            "messages": refs,
        }
        operations[f"consume:{topic}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{topic}"},
            "messages": refs,
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "CRM events",
            "version": "1.0.0",
            "description": (
                "Events the CRM services publish. Every message is a CloudEvents-style "
                "envelope; the key is the subject (the customer id for customer events), "
                "so one customer's events keep their order. Consumers ignore unknown types."
            ),
        },
        "defaultContentType": "application/json",
        "channels": dict(sorted(channels.items())),
        "operations": operations,
        "components": {"messages": messages, "schemas": dict(sorted(schemas.items()))},
    }


def render(registry: EventRegistry) -> str:
    """The document as stable, pretty JSON (what is committed)."""
    return json.dumps(asyncapi_document(registry), indent=2, sort_keys=True) + "\n"
