"""HTTP routes of the loyalty service, mounted under `/v1/loyalty`."""

from fastapi import APIRouter


def routes() -> APIRouter:
    """The service's routes; health and readiness come from the platform's app factory."""
    return APIRouter(tags=["loyalty"])
