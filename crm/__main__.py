"""`python -m crm` is the same as the `crm` console script."""

from crm.cli import app

app()
