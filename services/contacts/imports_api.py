"""Routes of the contacts service for imports; mounted by `services.contacts.api`."""

from __future__ import annotations

from fastapi import APIRouter


def routes() -> APIRouter:
    """The imports routes."""
    return APIRouter(tags=["contacts"])
