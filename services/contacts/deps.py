"""Dependency aliases of the contacts routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from services.contacts.models import SCHEMA
from services.contacts.profiles import ProfileRules
from shared.http.app import session_dependency
from shared.settings import Settings

Session = Annotated[AsyncSession, session_dependency(SCHEMA)]


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _rules(request: Request) -> ProfileRules:
    settings = _settings(request)
    return ProfileRules(
        default_region=settings.contacts_default_region,
        card_prefix=settings.contacts_card_prefix,
        card_length=settings.contacts_card_length,
    )


AppSettings = Annotated[Settings, Depends(_settings)]
Rules = Annotated[ProfileRules, Depends(_rules)]
