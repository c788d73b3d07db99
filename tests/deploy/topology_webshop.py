"""An outside system on `crm.purchases`: a web shop that publishes its own orders.

The README's events section lets outside systems publish `purchase.completed` and
`purchase.refunded` onto `crm.purchases` themselves. This one does it as an integrator
would, from the published contract alone and with none of our code: it writes the
envelope (`id`, `type`, `source`, `time`, `subject`, `schema_version`, `data`) by hand,
keys each message with its subject (the customer id, as our own relay keys purchase
events, so a customer's refund follows their purchase on one partition), gives every
event a fresh id, and checks each message against `docs/events/asyncapi.json` before it
sends it, so the document is held to what the consumers accept.

Only the loyalty worker's consumer group credits these purchases: no API sees them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
from aiokafka import AIOKafkaProducer

from tests.deploy.topology_shop import Shop, expected_points, refunded_points

TOPIC = "crm.purchases"
SOURCE = "web-shop"
STORE = "web-01"  # the web shop's store id, as the tills have theirs
CHANNEL = "web"
BEANS_MINOR = 4_500  # a bag of beans: category coffee
SHIPPING_MINOR = 890  # not coffee: the base rate
ASYNCAPI = Path(__file__).parents[2] / "docs" / "events" / "asyncapi.json"


@cache
def _validator(event_type: str) -> Any:
    """A validator of one message type's payload, as the AsyncAPI document states it."""
    document = json.loads(ASYNCAPI.read_text())
    payload = document["components"]["messages"][f"{event_type}.v1"]["payload"]
    # The payload's $refs point into the document's components: keep them reachable.
    schema = {**payload, "components": document["components"]}
    validator = jsonschema.Draft202012Validator
    return validator(schema, format_checker=validator.FORMAT_CHECKER)


@dataclass(frozen=True)
class Order:
    """A web order as sent, and what it must earn."""

    customer: str
    purchase_id: str
    total_minor: int
    points: int


@dataclass
class WebShop:
    """A Kafka producer of the shop's purchase events, and what it sent."""

    producer: AIOKafkaProducer
    shop: Shop
    orders: list[Order] = field(default_factory=list)
    sent: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)  # id -> key, value

    @classmethod
    @asynccontextmanager
    async def connected(cls, bootstrap: str, shop: Shop) -> AsyncIterator[WebShop]:
        """A web shop publishing to the broker at `bootstrap`, for the life of the block."""
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            yield cls(producer, shop)
        finally:
            await producer.stop()

    async def _publish(self, event_type: str, subject: str, data: dict[str, Any]) -> str:
        """Send one envelope keyed by its subject once the broker acknowledged it; its id."""
        event_id = str(uuid.uuid4())
        envelope = {
            "id": event_id,
            "type": event_type,
            "source": SOURCE,
            "time": datetime.now(UTC).isoformat(),
            "subject": subject,
            "schema_version": 1,
            "data": data,
        }
        errors = [e.message for e in _validator(event_type).iter_errors(envelope)]
        assert not errors, (event_type, errors)
        key, value = subject.encode(), json.dumps(envelope).encode()
        await self.producer.send_and_wait(TOPIC, value, key=key)
        self.sent[event_id] = (key, value)
        return event_id

    async def order(self, name: str, bags: int, other_minor: int = 0) -> str:
        """Publish a `purchase.completed` for a web order and book it; answer the event id.

        The order is `bags` bags of beans (coffee), shipping, and `other_minor` of things
        with no line on the receipt (a gift wrap, say), which earn at the base rate.
        """
        customer = self.shop.customers[name]
        purchase_id = str(uuid.uuid4())
        beans = {"sku": "BEANS-250", "category": "coffee", "quantity": bags}
        shipping = {"sku": "SHIPPING", "quantity": 1, "unit_price_minor": SHIPPING_MINOR}
        total_minor = bags * BEANS_MINOR + SHIPPING_MINOR + other_minor
        data = {
            "purchase_id": purchase_id,
            "customer_id": customer.id,
            "store_id": STORE,
            "order_id": f"web-{uuid.uuid4().hex[:10]}",
            "currency": "MYR",
            "total_minor": total_minor,
            "lines": [{**beans, "unit_price_minor": BEANS_MINOR}, shipping] if bags else [shipping],
            "channel": CHANNEL,
            "purchased_at": datetime.now(UTC).isoformat(),
        }
        event_id = await self._publish("purchase.completed", customer.id, data)
        points = expected_points(total_minor, bags * BEANS_MINOR)
        customer.bought(purchase_id, STORE, CHANNEL, total_minor, points)
        self.orders.append(Order(name, purchase_id, total_minor, points))
        return event_id

    async def refund(self, order: Order, amount_minor: int) -> str:
        """Publish a `purchase.refunded` of part of a web order and book it; the event id."""
        customer = self.shop.customers[order.customer]
        refund_id = str(uuid.uuid4())
        data = {
            "refund_id": refund_id,
            "purchase_id": order.purchase_id,
            "customer_id": customer.id,
            "currency": "MYR",
            "amount_minor": amount_minor,
            "refunded_at": datetime.now(UTC).isoformat(),
        }
        event_id = await self._publish("purchase.refunded", customer.id, data)
        points = refunded_points(order.points, order.total_minor, amount_minor)
        customer.refunded(refund_id, amount_minor, points)
        return event_id

    async def redeliver(self, event_id: str) -> None:
        """Send an event again, byte for byte: what a producer retry after a lost ack does."""
        key, value = self.sent[event_id]
        await self.producer.send_and_wait(TOPIC, value, key=key)
