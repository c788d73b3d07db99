"""Routes of the messaging service: filled in by the module's owner."""

from __future__ import annotations

from fastapi import APIRouter


def routes() -> APIRouter:
    """This module's routes."""
    return APIRouter()
