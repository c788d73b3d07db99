"""Fixtures of the service tests: the real service app on a fresh database.

Each service's test folder names its service with a `service` fixture.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.auth import Scope
from shared.db.engine import create_engine, session_factory
from shared.http.app import create_app
from shared.service import ServiceDefinition
from shared.settings import Settings
from tests.http.app import client_for
from tests.support.auth import SECRET, auth


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, jwt_secret=SECRET)  # type: ignore[arg-type]


@pytest.fixture
async def client(
    settings: Settings, service: ServiceDefinition
) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(create_app(settings, [service])) as http:
        yield http


@pytest.fixture
def admin(settings: Settings) -> dict[str, str]:
    return auth(settings, Scope.ADMIN)


@pytest.fixture
def pos(settings: Settings) -> dict[str, str]:
    return auth(settings, Scope.POS, store="kl-01")


@pytest.fixture
def reader(settings: Settings) -> dict[str, str]:
    return auth(settings, Scope.READ)


@pytest.fixture
async def sessions(
    client: httpx.AsyncClient, database_url: str
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Direct access to the service's database (migrated by the `client` app's start)."""
    engine = create_engine(database_url, pool_size=2)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()
