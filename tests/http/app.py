"""A test-only service that exercises the platform's HTTP conventions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

import httpx
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.auth import AdminAuth, PosAuth, ReadAuth
from shared.http.app import session_dependency
from shared.http.problems import Problem
from shared.service import ServiceDefinition
from shared.settings import Settings

Session = Annotated[AsyncSession, session_dependency("httptest")]
SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"


class OrderIn(BaseModel):
    name: str = Field(min_length=1)
    qty: int = Field(gt=0)
    delay: float = 0.0
    explode: bool = False


class OrderOut(BaseModel):
    id: int
    name: str
    qty: int


def routes() -> APIRouter:
    router = APIRouter()

    @router.post("/orders", status_code=201)
    async def create_order(body: OrderIn, session: Session, _: PosAuth) -> OrderOut:
        """Create an order (effectful: one row per execution)."""
        row = (
            await session.execute(
                text("INSERT INTO httptest.orders (name, qty) VALUES (:n, :q) RETURNING id"),
                {"n": body.name, "q": body.qty},
            )
        ).scalar_one()
        if body.delay:
            await asyncio.sleep(body.delay)
        if body.explode:
            raise RuntimeError("boom")
        return OrderOut(id=row, name=body.name, qty=body.qty)

    @router.get("/orders/count")
    async def count_orders(session: Session, _: ReadAuth) -> dict[str, int]:
        """How many orders exist."""
        total = (await session.execute(text("SELECT count(*) FROM httptest.orders"))).scalar_one()
        return {"count": total}

    @router.get("/admin-only")
    async def admin_only(_: AdminAuth) -> dict[str, str]:
        """Only admins."""
        return {"ok": "yes"}

    @router.get("/conflict")
    async def conflict() -> None:
        """Always a conflict, with an extension member."""
        raise Problem(409, "duplicate-thing", "Duplicate", "It exists.", existing_id="42")

    return router


HTTP_TEST_SERVICE = ServiceDefinition(
    name="httptest", routes=routes, migrations=Path(__file__).parent / "migrations"
)


def make_settings(database_url: str, **overrides: object) -> Settings:
    return Settings(database_url=database_url, jwt_secret=SECRET, **overrides)  # type: ignore[arg-type]


@asynccontextmanager
async def client_for(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the ASGI app, with the app's lifespan running."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client
