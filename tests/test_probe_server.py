"""The worker's probe endpoint answers liveness and metrics over real HTTP."""

from __future__ import annotations

import httpx

from shared import metrics
from shared.probe_server import start_probe_server


async def test_the_worker_endpoint_serves_health_and_metrics() -> None:
    server = await start_probe_server("127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    metrics.OUTBOX_OLDEST_AGE.labels("probe_test").set(12.5)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            health = await client.get("/healthz")
            scraped = await client.get("/metrics")
            missing = await client.get("/nothing-here")
            refused = await client.post("/healthz")
    finally:
        server.close()
        await server.wait_closed()
    assert (health.status_code, health.text) == (200, "ok\n")
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    assert 'crm_outbox_oldest_unpublished_age_seconds{schema="probe_test"} 12.5' in scraped.text
    assert missing.status_code == 404
    assert refused.status_code == 400


async def test_health_fails_once_a_worker_loop_has_died() -> None:
    dead: list[str] = []
    server = await start_probe_server("127.0.0.1", 0, lambda: dead)
    port = server.sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            alive = await client.get("/healthz")
            dead.append("consumer:loyalty")
            after = await client.get("/healthz")
    finally:
        server.close()
        await server.wait_closed()
    assert alive.status_code == 200
    assert after.status_code == 503
    assert "consumer:loyalty" in after.text
