"""HTTP routes of the contacts service, mounted under `/v1/contacts`."""

from fastapi import APIRouter


def routes() -> APIRouter:
    """The service's routes; health and readiness come from the platform's app factory."""
    return APIRouter(tags=["contacts"])
