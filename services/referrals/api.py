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
        export_api,
    ):
        router.include_router(module.routes())
    # Last, and straight onto this router: the list is served at the prefix itself (an
    # empty path cannot be included without a prefix) and `/{referral_id:uuid}` only
    # matches UUIDs, so it shadows none of the paths above.
    review_api.install(router)
    return router
