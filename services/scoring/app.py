"""The scoring service as a standalone ASGI app (`uvicorn services.scoring.app:create`)."""

from fastapi import FastAPI

from services.scoring import SERVICE
from shared.http.app import create_app
from shared.settings import Settings


def create() -> FastAPI:
    """Factory for ASGI servers; settings come from `CRM_` environment variables."""
    return create_app(Settings(), [SERVICE])
