"""Fixtures of the loyalty tests: the real service app on a fresh database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from services.loyalty import SERVICE
from shared.auth import Scope, issue_token
from shared.http.app import create_app
from shared.settings import Settings
from tests.http.app import client_for

SECRET = "loyalty-test-secret-long-enough-for-hs256-0123456789"


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, jwt_secret=SECRET)  # type: ignore[arg-type]


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(create_app(settings, [SERVICE])) as http:
        yield http


def auth(settings: Settings, scope: Scope, store: str | None = None) -> dict[str, str]:
    token = issue_token(settings, subject=f"{scope.value}-user", scopes=[scope], store_id=store)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def admin(settings: Settings) -> dict[str, str]:
    return auth(settings, Scope.ADMIN)


@pytest.fixture
def pos(settings: Settings) -> dict[str, str]:
    return auth(settings, Scope.POS, store="kl-01")
