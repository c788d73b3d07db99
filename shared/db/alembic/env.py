"""Alembic environment shared by every service's migration history.

`shared.db.migrations.migrate` passes an open connection and the target schema in
`config.attributes`; each service keeps its own `alembic_version` table in its schema.
"""

from __future__ import annotations

from alembic import context

config = context.config
connection = config.attributes["connection"]
schema = config.attributes["schema"]

context.configure(
    connection=connection,
    version_table_schema=schema,
    include_schemas=True,
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
