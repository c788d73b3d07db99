"""The app factory: one FastAPI app serving one service, or all of them on one port.

Every app gets the same conventions: `/healthz` and `/readyz` at the root and under each
service prefix, `/metrics`, problem+json errors, request ids, Idempotency-Key on effectful
POSTs, and bearer-token verification. The lifespan builds the `Runtime` (databases,
migrations, transport) and, when asked, runs the services' relays and consumers.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import Scope

from shared.auth import TokenVerifier, key_ring
from shared.http.idempotency import IdempotencyMiddleware
from shared.http.limits import BodySizeLimitMiddleware
from shared.http.middleware import RequestContextMiddleware
from shared.http.problems import Problem, install_problem_handlers
from shared.runtime import Runtime
from shared.service import ServiceDefinition
from shared.settings import Settings

log = structlog.get_logger(__name__)


def create_app(
    settings: Settings,
    services: Sequence[ServiceDefinition],
    *,
    run_workers: bool = False,
    title: str | None = None,
) -> FastAPI:
    """Build the ASGI app for `services`; nothing connects until the lifespan starts."""
    runtime = Runtime(settings, services)
    verifier = TokenVerifier(settings, key_ring(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        if run_workers:
            runtime.start_workers()
        log.info("app.started", services=[s.name for s in services], workers=run_workers)
        try:
            yield
        finally:
            await runtime.stop()
            log.info("app.stopped")

    names = ", ".join(s.name for s in services)
    app = FastAPI(
        title=title or f"CRM {names}",
        version="0.1.0",
        lifespan=lifespan,
        description="Customer retention backend. Errors are RFC 9457 problem+json.",
    )
    app.state.runtime = runtime
    app.state.settings = settings
    app.state.token_verifier = verifier
    install_problem_handlers(app)

    app.include_router(_health_router(runtime, list(services)))
    for service in services:
        app.include_router(_service_health_router(runtime, service), prefix=service.prefix)
        app.include_router(service.routes(), prefix=service.prefix)

    def sessions_for(name: str) -> tuple[async_sessionmaker[AsyncSession], str] | None:
        service = runtime.services.get(name)
        if service is None:
            return None
        return runtime.sessions(name), service.schema

    def principal_of(scope: Scope) -> str:
        authorization = dict(scope.get("headers", [])).get(b"authorization", b"")
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return "anonymous"
        try:
            return verifier.verify(token.strip()).subject
        except Problem:
            return "unverified:" + hashlib.sha256(token.encode()).hexdigest()

    app.add_middleware(
        IdempotencyMiddleware,
        sessions=sessions_for,
        principal_of=principal_of,
        ttl_seconds=lambda: settings.idempotency_ttl_seconds,
    )
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(RequestContextMiddleware)
    return app


async def _ready(runtime: Runtime, names: Sequence[str]) -> Response:
    problems: dict[str, str] = {}
    for name in names:
        try:
            async with runtime.engine(name).connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception as exc:
            problems[f"database:{name}"] = str(exc)[:200]
    if runtime.transport is None:
        problems["transport"] = "not started"
    else:
        try:
            await runtime.transport.ping()
        except Exception as exc:
            problems["transport"] = str(exc)[:200]
    if problems:
        raise Problem(
            503, "not-ready", "Not ready", "A dependency is unreachable.", checks=problems
        )
    return Response('{"status":"ready"}', media_type="application/json")


def _health_router(runtime: Runtime, services: list[ServiceDefinition]) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="Liveness: the process is up.")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", summary="Readiness: databases and the event transport answer.")
    async def readyz() -> Response:
        return await _ready(runtime, [s.name for s in services])

    @router.get("/metrics", summary="Prometheus metrics.", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


def _service_health_router(runtime: Runtime, service: ServiceDefinition) -> APIRouter:
    router = APIRouter(tags=[service.name])

    @router.get("/healthz", summary=f"Liveness of the {service.name} service.")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": service.name}

    @router.get("/readyz", summary=f"Readiness of the {service.name} service.")
    async def readyz() -> Response:
        return await _ready(runtime, [service.name])

    return router


def _app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


AppSettings = Annotated[Settings, Depends(_app_settings)]
"""The settings the app was built with, for routes that depend on configuration."""


def session_dependency(service: str) -> Any:
    """A FastAPI dependency yielding a session whose transaction the request owns.

    The route's work commits when the endpoint returns normally and rolls back when it
    raises; domain code only flushes.
    """

    async def dependency(request: Request) -> AsyncIterator[AsyncSession]:
        runtime: Runtime = request.app.state.runtime
        async with runtime.sessions(service)() as session, session.begin():
            yield session

    # scope="function": commit before the response is sent, so a client never sees success
    # for work that then failed to commit.
    return Depends(dependency, scope="function")
