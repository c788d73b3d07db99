"""Routes of the contacts service for consents; mounted by `services.contacts.api`."""

from __future__ import annotations

from fastapi import APIRouter


def routes() -> APIRouter:
    """The consents routes."""
    return APIRouter(tags=["contacts"])
