"""PostgreSQL access: engines, sessions, one schema per service, migrations, the embedded server."""
