"""Run one schema's Alembic history against a database.

Every service has its own folder of revisions and its own `alembic_version` table inside
its schema, so services migrate independently. Migration is serialised by an advisory
lock, which makes `crm migrate` safe to run twice or from several processes at once.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

ALEMBIC_DIR = Path(__file__).parent / "alembic"


def _config(schema: str, versions: Path, connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(ALEMBIC_DIR))
    config.set_main_option("version_locations", str(versions))
    config.set_main_option("path_separator", "os")
    config.attributes["connection"] = connection
    config.attributes["schema"] = schema
    return config


def _upgrade(connection: Connection, schema: str, versions: Path) -> None:
    command.upgrade(_config(schema, versions, connection), "head")


async def migrate(engine: AsyncEngine, schema: str, versions: Path) -> None:
    """Bring `schema` up to the newest revision in `versions`."""
    async with engine.begin() as connection:
        await connection.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:name, 0))"),
            {"name": f"crm.migrate.{schema}"},
        )
        await connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        await connection.run_sync(_upgrade, schema, versions)
