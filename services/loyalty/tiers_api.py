"""Routes of the loyalty service (tiers_api); mounted by `services.loyalty.api`."""

from __future__ import annotations

from fastapi import APIRouter


def routes() -> APIRouter:
    """The routes of this module."""
    return APIRouter(tags=["loyalty"])
