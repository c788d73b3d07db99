"""Alembic revisions of this service's schema, applied in order by `crm migrate`."""
