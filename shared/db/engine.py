"""Engines and sessions.

Services that share one database URL share one engine (and so one connection pool); each
service still keeps to its own schema. The entry point owns the transaction: request
dependencies and consumer wrappers commit, domain code only flushes.
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

DATABASE_FAULTS: tuple[type[Exception], ...] = (OSError, DBAPIError, PoolTimeout)
"""Faults a long-running loop waits out and retries: a lost connection, a failover, a pool
briefly exhausted. Letting them end the loop would leave a live process doing nothing."""


def create_engine(url: str, pool_size: int = 10) -> AsyncEngine:
    """An asyncpg engine with pool settings suited to many short transactions."""
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args={"server_settings": {"application_name": "crm"}},
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit (no implicit refresh I/O)."""
    return async_sessionmaker(engine, expire_on_commit=False)


class Engines:
    """One engine per distinct database URL, disposed together at shutdown."""

    def __init__(self, pool_size: int = 10) -> None:
        self._pool_size = pool_size
        self._engines: dict[str, AsyncEngine] = {}

    def get(self, url: str) -> AsyncEngine:
        """The engine for `url`, created on first use."""
        engine = self._engines.get(url)
        if engine is None:
            engine = create_engine(url, self._pool_size)
            self._engines[url] = engine
        return engine

    async def dispose(self) -> None:
        """Close every pool; called once when the process stops."""
        for engine in self._engines.values():
            await engine.dispose()
        self._engines.clear()
