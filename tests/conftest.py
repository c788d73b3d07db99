"""Test session fixtures: one embedded PostgreSQL server, a fresh database per test.

Tests that need committed data across connections (relays, consumers, HTTP requests) get
their own database, so no test sees another's rows.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from shared.db.embedded import EmbeddedServer
from tests.support.broker import Broker, BrokerUnavailable, start_broker
from tests.support.database import fresh_database


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The libpq URL of an embedded server that lives for the test session."""
    # Short path: the server's Unix socket path must fit in 107 bytes.
    data_dir = Path(tempfile.mkdtemp(prefix="crm-test-"))
    server = EmbeddedServer(data_dir)
    try:
        yield server.url
    finally:
        server.release()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
async def database_url(postgres_server: str) -> AsyncIterator[str]:
    """A new, empty database for one test, dropped afterwards."""
    async with fresh_database(postgres_server) as url:
        yield url


@pytest.fixture
def kafka_broker() -> Iterator[Broker]:
    """A fresh tansu broker (memory storage) on a free loopback port, for one test."""
    try:
        broker = start_broker()
    except BrokerUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield broker
    finally:
        broker.stop()
