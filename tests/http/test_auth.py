"""Bearer tokens: missing, expired, wrongly signed and under-scoped tokens are refused."""

from __future__ import annotations

from datetime import timedelta

import httpx
import jwt
import pytest
from pydantic import SecretStr

from shared.auth import Scope, TokenVerifier, issue_token, key_ring
from shared.http.problems import Problem
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
    forged = issue_token(
        settings,
        subject="x",
        scopes=[Scope.ADMIN],
        ring=key_ring(settings.model_copy(update={"jwt_secret": SecretStr("another-key-" * 4)})),
    )
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

    token = issue_token(settings, subject="till-7", scopes=[Scope.POS], store_id="kl-01")
    principal = TokenVerifier(settings, key_ring(settings)).verify(token)
    assert principal.store_id == "kl-01"
    assert principal.subject == "till-7"
    assert principal.has(Scope.READ)
    assert not principal.has(Scope.ADMIN)


def _ring_settings(settings: Settings, keys: dict[str, str], signing: str) -> Settings:
    return Settings(
        database_url=settings.database_url,
        jwt_keys={kid: SecretStr(secret) for kid, secret in keys.items()},
        jwt_signing_key_id=signing,
    )


OLD_KEY = "old-key-that-is-long-enough-for-hs256-0123456789"
NEW_KEY = "new-key-that-is-long-enough-for-hs256-9876543210"


def test_signing_keys_rotate_without_rejecting_live_tokens(settings: Settings) -> None:
    before = _ring_settings(settings, {"2026-06": OLD_KEY}, "2026-06")
    during = _ring_settings(settings, {"2026-06": OLD_KEY, "2026-12": NEW_KEY}, "2026-12")
    after = _ring_settings(settings, {"2026-12": NEW_KEY}, "2026-12")
    old_token = issue_token(before, subject="till-1", scopes=[Scope.POS])
    new_token = issue_token(during, subject="till-2", scopes=[Scope.POS])
    assert jwt.get_unverified_header(old_token)["kid"] == "2026-06"
    assert jwt.get_unverified_header(new_token)["kid"] == "2026-12"

    # While both keys are known, tokens of either verify everywhere.
    for ring_settings in (before, during):
        assert TokenVerifier(ring_settings, key_ring(ring_settings)).verify(old_token).subject == (
            "till-1"
        )
    assert TokenVerifier(during, key_ring(during)).verify(new_token).subject == "till-2"
    assert TokenVerifier(after, key_ring(after)).verify(new_token).subject == "till-2"

    # Once the old key is dropped, its tokens are refused.
    with pytest.raises(Problem) as refused:
        TokenVerifier(after, key_ring(after)).verify(old_token)
    assert refused.value.status == 401
    assert "unknown key id" in str(refused.value.detail)


def test_a_token_naming_a_known_kid_with_another_key_is_refused(settings: Settings) -> None:
    ring_settings = _ring_settings(settings, {"a": OLD_KEY, "b": NEW_KEY}, "a")
    forged = jwt.encode(
        {"sub": "x", "scope": "admin", "iss": "crm", "aud": "crm", "exp": 4_102_444_800},
        "attacker-key-that-is-long-enough-for-hs256-000000",
        algorithm="HS256",
        headers={"kid": "b"},
    )
    with pytest.raises(Problem) as refused:
        TokenVerifier(ring_settings, key_ring(ring_settings)).verify(forged)
    assert refused.value.status == 401


def test_tokens_without_kid_verify_with_the_legacy_secret(settings: Settings) -> None:
    legacy = Settings(database_url=settings.database_url, jwt_secret=SecretStr(OLD_KEY))
    unkeyed = issue_token(legacy, subject="old-till", scopes=[Scope.READ])
    assert "kid" not in jwt.get_unverified_header(unkeyed)
    migrated = Settings(
        database_url=settings.database_url,
        jwt_secret=SecretStr(OLD_KEY),
        jwt_keys={"2026-12": SecretStr(NEW_KEY)},
        jwt_signing_key_id="2026-12",
    )
    principal = TokenVerifier(migrated, key_ring(migrated)).verify(unkeyed)
    assert principal.subject == "old-till"
    assert jwt.get_unverified_header(issue_token(migrated, subject="s", scopes=[]))["kid"] == (
        "2026-12"
    )


def test_a_ring_must_name_a_known_signing_key() -> None:
    with pytest.raises(ValueError, match="not a key id"):
        Settings(jwt_keys={"a": SecretStr(OLD_KEY)}, jwt_signing_key_id="b")
    with pytest.raises(ValueError, match="set CRM_JWT_SIGNING_KEY_ID"):
        Settings(jwt_keys={"a": SecretStr(OLD_KEY), "b": SecretStr(NEW_KEY)})
