"""Routes of the contacts service for gdpr; mounted by `services.contacts.api`."""

from __future__ import annotations

from fastapi import APIRouter


def routes() -> APIRouter:
    """The gdpr routes."""
    return APIRouter(tags=["contacts"])
