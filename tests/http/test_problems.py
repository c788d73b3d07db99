"""Every error is RFC 9457 problem+json with a stable type and the offending fields."""

from __future__ import annotations

import httpx

from shared.auth import Scope
from shared.settings import Settings
from tests.http.conftest import bearer

PROBLEM = "application/problem+json"


async def test_validation_error_names_the_fields(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    response = await client.post(
        "/v1/httptest/orders", json={"name": "", "qty": 0}, headers=bearer(settings, Scope.POS)
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["type"].endswith("/validation-error")
    assert {e["field"] for e in body["errors"]} == {"body.name", "body.qty"}
    count = await client.get("/v1/httptest/orders/count", headers=bearer(settings, Scope.READ))
    assert count.json() == {"count": 0}, "a rejected request changes nothing"


async def test_domain_problem_keeps_its_extensions(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/httptest/conflict")
    assert response.status_code == 409
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["type"].endswith("/duplicate-thing")
    assert body["existing_id"] == "42"
    assert body["instance"] == "/v1/httptest/conflict"


async def test_unknown_route_and_method_are_problems(client: httpx.AsyncClient) -> None:
    missing = await client.get("/v1/httptest/nope")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == PROBLEM
    wrong_method = await client.delete("/v1/httptest/conflict")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["type"].endswith("/method-not-allowed")


async def test_unexpected_error_is_a_problem_not_a_bare_500(settings: Settings) -> None:
    from shared.http.app import create_app
    from tests.http.app import HTTP_TEST_SERVICE, client_for

    app = create_app(settings, [HTTP_TEST_SERVICE])
    async with client_for(app) as client:
        transport = client._transport
        assert isinstance(transport, httpx.ASGITransport)
        transport.raise_app_exceptions = False
        response = await client.post(
            "/v1/httptest/orders",
            json={"name": "x", "qty": 1, "explode": True},
            headers=bearer(settings, Scope.POS),
        )
        assert response.status_code == 500
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["type"].endswith("/internal-error")
        count = await client.get("/v1/httptest/orders/count", headers=bearer(settings, Scope.READ))
        assert count.json() == {"count": 0}, "the failed request's insert was rolled back"


async def test_request_id_is_echoed_or_made(client: httpx.AsyncClient) -> None:
    given = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = await client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert made.headers["x-request-id"] != "bad id with spaces"
    assert len(made.headers["x-request-id"]) == 32


async def test_health_readiness_and_metrics(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/v1/httptest/healthz")).json()["service"] == "httptest"
    assert (await client.get("/readyz")).status_code == 200
    assert (await client.get("/v1/httptest/readyz")).status_code == 200
    metrics = await client.get("/metrics")
    assert "crm_http_requests_total" in metrics.text


async def test_oversize_body_is_413_and_changes_nothing(database_url: str) -> None:
    from shared.http.app import create_app
    from tests.http.app import HTTP_TEST_SERVICE, client_for, make_settings

    settings = make_settings(database_url, max_request_bytes=2048)
    async with client_for(create_app(settings, [HTTP_TEST_SERVICE])) as client:
        headers = bearer(settings, Scope.POS)
        big = {"name": "x" * 4096, "qty": 1}
        response = await client.post("/v1/httptest/orders", json=big, headers=headers)
        assert response.status_code == 413
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["type"].endswith("/payload-too-large")

        async def chunks():  # no Content-Length: counted as it streams
            for _ in range(4):
                yield b" " * 1024
            yield b'{"name": "y", "qty": 1}'

        streamed = await client.post(
            "/v1/httptest/orders",
            content=chunks(),
            headers={**headers, "Content-Type": "application/json"},
        )
        assert streamed.status_code == 413
        count = await client.get("/v1/httptest/orders/count", headers=bearer(settings, Scope.READ))
        assert count.json() == {"count": 0}
