"""The Kafka transport creates its topics at start, with the configured partitions."""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from shared.pipeline.transports.kafka import KafkaTransport
from shared.settings import Settings
from tests.support.broker import Broker

pytestmark = pytest.mark.kafka


async def test_topics_are_created_once_and_left_alone_after(kafka_broker: Broker) -> None:
    settings = Settings(
        transport="kafka", kafka_bootstrap_servers=kafka_broker.bootstrap, kafka_partitions=3
    )
    for _ in range(2):  # the second start finds them and changes nothing
        transport = KafkaTransport(settings, ["crm.contacts", "crm.purchases"])
        await transport.start()
        await transport.ping()
        await transport.stop()
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(["crm.contacts", "crm.purchases"])
    finally:
        await admin.close()
    assert {t["topic"]: len(t["partitions"]) for t in described} == {
        "crm.contacts": 3,
        "crm.purchases": 3,
    }


async def test_no_topics_are_created_when_not_allowed(kafka_broker: Broker) -> None:
    settings = Settings(
        transport="kafka", kafka_bootstrap_servers=kafka_broker.bootstrap, kafka_create_topics=False
    )
    transport = KafkaTransport(settings, ["crm.scoring"])
    await transport.start()
    await transport.stop()
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    await admin.start()
    try:
        assert "crm.scoring" not in await admin.list_topics()
    finally:
        await admin.close()
