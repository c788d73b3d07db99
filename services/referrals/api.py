"""HTTP routes of the referrals service, mounted under `/v1/referrals`."""

from __future__ import annotations

from fastapi import APIRouter

from services.referrals import (
    attributions_api,
    codes_api,
    export_api,
    insight_api,
    programmes_api,
    review_api,
)


def routes() -> APIRouter:
    """The service's routes; health and readiness come from the platform's app factory."""
    router = APIRouter(tags=["referrals"])
    for module in (
        codes_api,
        attributions_api,
        programmes_api,
        insight_api,
        review_api,
        export_api,
    ):
        router.include_router(module.routes())
    return router
