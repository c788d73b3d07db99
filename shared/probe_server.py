"""The worker's small HTTP endpoint: `/healthz` for liveness probes, `/metrics` for Prometheus.

A worker serves no API, but the orchestrator must know it is alive and Prometheus must
scrape its relay and consumer metrics. The endpoint runs on the worker's own event loop,
so a loop blocked by a runaway handler stops answering `/healthz` and gets the pod
restarted, which a server in a thread of its own would hide. For the same reason
`/healthz` fails once a relay, consumer or job loop has died: the process would otherwise
look alive while doing nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Sequence

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

_READ_TIMEOUT_SECONDS = 5.0


FailedWorkers = Callable[[], Sequence[str]]


def _none_failed() -> Sequence[str]:
    return ()


async def start_probe_server(
    host: str, port: int, failed_workers: FailedWorkers = _none_failed
) -> asyncio.Server:
    """Listen on `host:port` (0 picks a free port) until the returned server is closed.

    `failed_workers` names the loops that have died; any makes `/healthz` answer 503.
    """
    return await asyncio.start_server(functools.partial(_answer, failed_workers), host, port)


async def _answer(
    failed_workers: FailedWorkers, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        async with asyncio.timeout(_READ_TIMEOUT_SECONDS):
            request_line = await reader.readline()
            while (await reader.readline()).strip():  # the headers; nothing in them matters
                pass
        status, content_type, body = _response_for(request_line, failed_workers)
        head = (
            f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()
    except (TimeoutError, ConnectionError):
        pass  # a client that hangs or goes away gets nothing
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def _response_for(request_line: bytes, failed_workers: FailedWorkers) -> tuple[str, str, bytes]:
    parts = request_line.decode("latin-1").split()
    if len(parts) != 3 or parts[0] not in ("GET", "HEAD"):
        return "400 Bad Request", "text/plain", b"expected GET /healthz or GET /metrics\n"
    path = parts[1].split("?", 1)[0]
    if path == "/healthz":
        failed = failed_workers()
        if failed:
            return (
                "503 Service Unavailable",
                "text/plain",
                f"stopped: {', '.join(failed)}\n".encode(),
            )
        return "200 OK", "text/plain", b"ok\n"
    if path == "/metrics":
        return "200 OK", CONTENT_TYPE_LATEST, generate_latest()
    return "404 Not Found", "text/plain", b"not found\n"
