"""Request ids, access logs and request metrics, as one pure ASGI middleware.

Every response carries `X-Request-ID` (the caller's, when it sent a sane one), and every
log line written while serving the request carries it too.
"""

from __future__ import annotations

import re
import time
import uuid

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import metrics

log = structlog.get_logger(__name__)

_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def service_of(path: str) -> str:
    """The service a path belongs to (`/v1/<service>/...`), or `platform`."""
    parts = path.split("/", 3)
    if len(parts) >= 3 and parts[1] == "v1" and parts[2]:
        return parts[2]
    return "platform"


class RequestContextMiddleware:
    """Assigns the request id, binds it for logging, and records metrics per route."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _SANE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            service = service_of(scope["path"])
            method = scope["method"]
            metrics.HTTP_REQUESTS.labels(service, template, method, str(status)).inc()
            metrics.HTTP_LATENCY.labels(service, template, method).observe(elapsed)
            if not scope["path"].endswith(("/healthz", "/readyz", "/metrics")):
                log.info(
                    "http.request",
                    method=method,
                    path=scope["path"],
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                )
            structlog.contextvars.unbind_contextvars("request_id")
