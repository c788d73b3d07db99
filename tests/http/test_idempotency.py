"""Idempotency-Key: replay, conflict, concurrency, expiry, and no storing of failures."""

from __future__ import annotations

import asyncio

import httpx

from shared.auth import Scope
from shared.http.app import create_app
from shared.settings import Settings
from tests.http.app import HTTP_TEST_SERVICE, client_for, make_settings
from tests.http.conftest import bearer

ORDERS = "/v1/httptest/orders"


async def count(client: httpx.AsyncClient, settings: Settings) -> int:
    response = await client.get(f"{ORDERS}/count", headers=bearer(settings, Scope.READ))
    return int(response.json()["count"])


async def test_same_key_and_body_replays_the_first_response(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    headers = {**bearer(settings, Scope.POS), "Idempotency-Key": "order-1"}
    first = await client.post(ORDERS, json={"name": "latte", "qty": 2}, headers=headers)
    again = await client.post(ORDERS, json={"name": "latte", "qty": 2}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert await count(client, settings) == 1


async def test_same_key_with_another_body_is_409(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    headers = {**bearer(settings, Scope.POS), "Idempotency-Key": "order-2"}
    await client.post(ORDERS, json={"name": "latte", "qty": 2}, headers=headers)
    other = await client.post(ORDERS, json={"name": "latte", "qty": 3}, headers=headers)
    assert other.status_code == 409
    assert other.json()["type"].endswith("/idempotency-key-reused")
    assert await count(client, settings) == 1


async def test_keys_are_scoped_to_the_caller(client: httpx.AsyncClient, settings: Settings) -> None:
    body = {"name": "tea", "qty": 1}
    for till in ("till-1", "till-2"):
        headers = {**bearer(settings, Scope.POS, subject=till), "Idempotency-Key": "same"}
        assert (await client.post(ORDERS, json=body, headers=headers)).status_code == 201
    assert await count(client, settings) == 2


async def test_two_concurrent_requests_with_one_key_apply_once(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    headers = {**bearer(settings, Scope.POS), "Idempotency-Key": "race"}
    body = {"name": "mocha", "qty": 1, "delay": 0.5}
    first, second = await asyncio.gather(
        client.post(ORDERS, json=body, headers=headers),
        client.post(ORDERS, json=body, headers=headers),
    )
    statuses = sorted([first.status_code, second.status_code])
    assert statuses == [201, 409]
    loser = first if first.status_code == 409 else second
    assert loser.json()["type"].endswith("/idempotency-request-in-progress")
    assert loser.headers["retry-after"] == "1"
    assert await count(client, settings) == 1
    replay = await client.post(ORDERS, json=body, headers=headers)
    assert replay.status_code == 201
    assert replay.headers["idempotent-replayed"] == "true"
    assert await count(client, settings) == 1


async def test_server_errors_are_not_stored(settings: Settings) -> None:
    app = create_app(settings, [HTTP_TEST_SERVICE])
    async with client_for(app) as client:
        transport = client._transport
        assert isinstance(transport, httpx.ASGITransport)
        transport.raise_app_exceptions = False
        headers = {**bearer(settings, Scope.POS), "Idempotency-Key": "retry-me"}
        failed = await client.post(
            ORDERS, json={"name": "x", "qty": 1, "explode": True}, headers=headers
        )
        assert failed.status_code == 500
        retried = await client.post(
            ORDERS, json={"name": "x", "qty": 1, "explode": True}, headers=headers
        )
        assert retried.status_code == 500
        assert "idempotent-replayed" not in retried.headers


async def test_keys_expire(database_url: str) -> None:
    settings = make_settings(database_url, idempotency_ttl_seconds=1)
    async with client_for(create_app(settings, [HTTP_TEST_SERVICE])) as client:
        headers = {**bearer(settings, Scope.POS), "Idempotency-Key": "short-lived"}
        await client.post(ORDERS, json={"name": "a", "qty": 1}, headers=headers)
        await asyncio.sleep(1.2)
        later = await client.post(ORDERS, json={"name": "b", "qty": 1}, headers=headers)
        assert later.status_code == 201, "an expired key may be used again"
        assert "idempotent-replayed" not in later.headers
        assert await count(client, settings) == 2


async def test_invalid_key_is_400(client: httpx.AsyncClient, settings: Settings) -> None:
    headers = {**bearer(settings, Scope.POS), "Idempotency-Key": "k" * 300}
    response = await client.post(ORDERS, json={"name": "a", "qty": 1}, headers=headers)
    assert response.status_code == 400
    assert response.json()["type"].endswith("/invalid-idempotency-key")
    assert await count(client, settings) == 0
