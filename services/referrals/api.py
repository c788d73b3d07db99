"""HTTP routes of the referrals service, mounted under `/v1/referrals`."""

from fastapi import APIRouter


def routes() -> APIRouter:
    """The service's routes; health and readiness come from the platform's app factory."""
    return APIRouter(tags=["referrals"])
