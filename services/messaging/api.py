"""HTTP routes of the messaging service, mounted under `/v1/messaging`."""

from __future__ import annotations

from fastapi import APIRouter

from services.messaging import (
    campaigns_api,
    gdpr_api,
    surveys_api,
    templates_api,
    tracking_api,
    triggers_api,
)


def routes() -> APIRouter:
    """The service's routes; health and readiness come from the platform's app factory."""
    router = APIRouter(tags=["messaging"])
    for module in (
        templates_api,
        campaigns_api,
        triggers_api,
        surveys_api,
        gdpr_api,
        tracking_api,
    ):
        router.include_router(module.routes())
    return router
