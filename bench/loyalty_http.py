"""HTTP half of the loyalty benchmark: a real uvicorn server in a child process, and load.

The server is the production app (`create_app(settings, [SERVICE], run_workers=True)`, so
the relay and the loyalty consumer run beside the API as in a deployment) served by
uvicorn on a free loopback port in a spawned process; the load generator is an
`httpx.AsyncClient` in the benchmark's process with `clients` concurrent workers, so the
client's CPU is not charged to the server's event loop.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any

import httpx

from bench.probes import percentile


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve(settings_kwargs: dict[str, Any], port: int) -> None:
    """Child process: the loyalty app under uvicorn until SIGTERM."""
    import uvicorn

    from services.loyalty import SERVICE
    from shared.http.app import create_app
    from shared.logging import configure_logging
    from shared.settings import Settings

    configure_logging("WARNING", json=False)
    settings = Settings(_env_file=None, **settings_kwargs)  # type: ignore[call-arg]
    app = create_app(settings, [SERVICE], run_workers=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


class ServerProcess:
    """The uvicorn child: `start` waits for /readyz, `stop` sends SIGTERM and waits."""

    def __init__(self, settings_kwargs: dict[str, Any]) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.process: multiprocessing.process.BaseProcess = get_context("spawn").Process(
            target=serve, args=(settings_kwargs, self.port), daemon=True
        )

    async def start(self, timeout: float = 60.0) -> None:
        self.process.start()
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.base_url) as client:
            while time.monotonic() < deadline:
                if not self.process.is_alive():
                    raise RuntimeError(f"uvicorn exited with {self.process.exitcode}")
                try:
                    if (await client.get("/readyz", timeout=1.0)).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise TimeoutError("the loyalty app did not become ready")

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
        self.process.join(20)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


@dataclass
class LatencyResult:
    """One endpoint under load: latencies in ms, throughput, failures."""

    endpoint: str
    requests: int
    clients: int
    seconds: float = math.nan
    per_second: float = math.nan
    p50_ms: float = math.nan
    p90_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan
    failures: int = 0
    statuses: str = ""


Request = Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]


async def load(
    base_url: str,
    headers: dict[str, str],
    endpoint: str,
    count: int,
    clients: int,
    limit: float,
    request: Request,
    expected: Sequence[int],
) -> LatencyResult:
    """`count` requests from `clients` closed-loop workers; each timed from send to body.

    No request is started `limit` s after the first one, so a slow server cannot make the
    run overlong; `requests` then says how many were sent.
    """
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    next_index = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, limits=limits, timeout=60.0
    ) as client:

        async def worker() -> None:
            nonlocal next_index
            while next_index < count and time.perf_counter() < deadline:
                index = next_index
                next_index += 1
                began = time.perf_counter()
                try:
                    response = await request(client, index)
                    status = response.status_code
                except httpx.HTTPError:
                    status = 0
                latencies.append(time.perf_counter() - began)
                statuses[status] = statuses.get(status, 0) + 1

        # One untimed request per connection first: connection set-up is not latency.
        await asyncio.gather(*(client.get("/healthz") for _ in range(clients)))
        started = time.perf_counter()
        deadline = started + limit
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    if not ordered:
        return LatencyResult(endpoint, 0, clients)
    return LatencyResult(
        endpoint=endpoint,
        requests=len(ordered),
        clients=clients,
        seconds=elapsed,
        per_second=len(ordered) / elapsed,
        p50_ms=1000 * percentile(ordered, 0.50),
        p90_ms=1000 * percentile(ordered, 0.90),
        p99_ms=1000 * percentile(ordered, 0.99),
        max_ms=1000 * ordered[-1],
        failures=sum(n for status, n in statuses.items() if status not in expected),
        statuses=" ".join(f"{status}x{n}" for status, n in sorted(statuses.items())),
    )


def purchase_body(index: int, customer: uuid.UUID, lines: list[dict[str, Any]]) -> dict[str, Any]:
    """A till's POST body for a purchase by customer id, with a unique order id."""
    return {
        "customer": {"id": str(customer)},
        "order_id": f"HTTP-{index:07d}",
        "currency": "MYR",
        "total_minor": sum(line["quantity"] * line["unit_price_minor"] for line in lines),
        "lines": lines,
    }
