"""The embedded server is initialised once and reused; migrations are repeatable."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from shared.db.embedded import asyncpg_url, ensure_database, start_embedded_server
from shared.db.engine import create_engine
from shared.db.migrations import migrate

CONTACTS_MIGRATIONS = Path(__file__).parents[2] / "services" / "contacts" / "migrations"


async def test_a_second_start_reuses_the_running_server(postgres_server: str) -> None:
    data_dir = Path(postgres_server.split("host=")[1]).parent
    assert start_embedded_server(data_dir) == postgres_server
    await ensure_database(postgres_server, "reuse_check")
    await ensure_database(postgres_server, "reuse_check")  # idempotent


async def test_migrations_make_the_schema_and_run_twice(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await migrate(engine, "contacts", CONTACTS_MIGRATIONS)
        await migrate(engine, "contacts", CONTACTS_MIGRATIONS)
        async with engine.connect() as connection:
            version = (
                await connection.execute(text("SELECT version_num FROM contacts.alembic_version"))
            ).scalar_one()
            tables = set(
                (
                    await connection.execute(
                        text("SELECT tablename FROM pg_tables WHERE schemaname = 'contacts'")
                    )
                ).scalars()
            )
        newest = max(p.name for p in CONTACTS_MIGRATIONS.glob("2*.py"))
        assert version == f"contacts_{newest.split('_')[1]}", "the newest revision is applied"
        assert {"outbox", "inbox", "idempotency_keys", "alembic_version"} <= tables
    finally:
        await engine.dispose()


def test_url_conversion() -> None:
    url = asyncpg_url("postgresql://postgres:@/postgres?host=/tmp/x/pg", "crm")
    assert url == "postgresql+asyncpg://postgres@/crm?host=/tmp/x/pg"
