"""Dependency aliases of the contacts routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from sqlalchemy.ext.asyncio import AsyncSession

from services.contacts.models import SCHEMA
from services.contacts.profiles import ProfileRules
from shared.http.app import AppSettings, session_dependency

__all__ = ["AppSettings", "Rules", "Session"]

Session = Annotated[AsyncSession, session_dependency(SCHEMA)]


def _rules(settings: AppSettings) -> ProfileRules:
    return ProfileRules(
        default_region=settings.contacts_default_region,
        card_prefix=settings.contacts_card_prefix,
        card_length=settings.contacts_card_length,
    )


Rules = Annotated[ProfileRules, Depends(_rules)]
