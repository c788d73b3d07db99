"""Databases for tests: each test gets its own, so no test sees another's rows."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import asyncpg

from shared.db.embedded import asyncpg_url


@contextlib.asynccontextmanager
async def fresh_database(server_url: str) -> AsyncIterator[str]:
    """A new, empty database on the server at `server_url`, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    socket_dir = server_url.split("host=")[1]
    admin = await asyncpg.connect(host=socket_dir, user="postgres", database="postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield asyncpg_url(server_url, name)
    finally:
        admin = await asyncpg.connect(host=socket_dir, user="postgres", database="postgres")
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
