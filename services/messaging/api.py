"""HTTP routes of the messaging service, mounted under `/v1/messaging`."""

from fastapi import APIRouter


def routes() -> APIRouter:
    """The service's routes; health and readiness come from the platform's app factory."""
    return APIRouter(tags=["messaging"])
