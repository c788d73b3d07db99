"""Bearer tokens: missing, expired, wrongly signed and under-scoped tokens are refused."""

from __future__ import annotations

from datetime import timedelta

import httpx
import jwt
import pytest

from shared.auth import Scope, issue_token
from shared.settings import Settings
from tests.http.conftest import bearer

COUNT = "/v1/httptest/orders/count"


async def test_missing_token_is_401_with_challenge(client: httpx.AsyncClient) -> None:
    response = await client.get(COUNT)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["type"].endswith("/missing-token")


async def test_expired_token_is_401(client: httpx.AsyncClient, settings: Settings) -> None:
    token = issue_token(settings, subject="x", scopes=[Scope.ADMIN], ttl=timedelta(seconds=-1))
    response = await client.get(COUNT, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.json()["type"].endswith("/token-expired")


async def test_wrong_signature_is_401(client: httpx.AsyncClient, settings: Settings) -> None:
    forged = issue_token(settings, subject="x", scopes=[Scope.ADMIN], key="another-key-" * 4)
    response = await client.get(COUNT, headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401
    assert response.json()["type"].endswith("/invalid-token")


async def test_unsigned_token_is_401(client: httpx.AsyncClient) -> None:
    unsigned = jwt.encode({"sub": "x", "scope": "admin"}, key=None, algorithm="none")
    response = await client.get(COUNT, headers={"Authorization": f"Bearer {unsigned}"})
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("scopes", "path", "status"),
    [
        ((Scope.READ,), COUNT, 200),
        ((Scope.POS,), COUNT, 200),
        ((Scope.READ,), "/v1/httptest/admin-only", 403),
        ((Scope.POS,), "/v1/httptest/admin-only", 403),
        ((Scope.ADMIN,), "/v1/httptest/admin-only", 200),
    ],
)
async def test_scopes(
    client: httpx.AsyncClient,
    settings: Settings,
    scopes: tuple[Scope, ...],
    path: str,
    status: int,
) -> None:
    response = await client.get(path, headers=bearer(settings, *scopes))
    assert response.status_code == status
    if status == 403:
        assert response.json()["type"].endswith("/insufficient-scope")


async def test_read_token_cannot_post(client: httpx.AsyncClient, settings: Settings) -> None:
    response = await client.post(
        "/v1/httptest/orders", json={"name": "a", "qty": 1}, headers=bearer(settings, Scope.READ)
    )
    assert response.status_code == 403


def test_store_claim_round_trips(settings: Settings) -> None:
    from shared.auth import TokenVerifier

    token = issue_token(settings, subject="till-7", scopes=[Scope.POS], store_id="kl-01")
    principal = TokenVerifier(
        settings, "test-secret-that-is-long-enough-for-hs256-0123456789"
    ).verify(token)
    assert principal.store_id == "kl-01"
    assert principal.subject == "till-7"
    assert principal.has(Scope.READ)
    assert not principal.has(Scope.ADMIN)
