from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from shared.auth import Scope, issue_token
from shared.http.app import create_app
from shared.settings import Settings
from tests.http.app import HTTP_TEST_SERVICE, client_for, make_settings


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(create_app(settings, [HTTP_TEST_SERVICE])) as http:
        yield http


def bearer(settings: Settings, *scopes: Scope, subject: str = "tester") -> dict[str, str]:
    token = issue_token(settings, subject=subject, scopes=list(scopes))
    return {"Authorization": f"Bearer {token}"}
