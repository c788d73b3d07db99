"""HTTP routes of the scoring service, mounted under `/v1/scoring`."""

from fastapi import APIRouter


def routes() -> APIRouter:
    """The service's routes; health and readiness come from the platform's app factory."""
    return APIRouter(tags=["scoring"])
