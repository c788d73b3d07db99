"""Routes of referral codes: show a customer's code and share link, renew it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from services.referrals import codes, rules
from services.referrals.models import SCHEMA
from shared.auth import PosAuth, ReadAuth
from shared.http.app import AppSettings, session_dependency
from shared.http.problems import Problem
from shared.settings import Settings

Session = Annotated[AsyncSession, session_dependency(SCHEMA)]


class PreviousCode(BaseModel):
    """A replaced code, still accepted until `valid_until`."""

    code: str = Field(examples=["K7QM3XRT"])
    replaced_at: datetime
    valid_until: datetime


class CodeOut(BaseModel):
    """A customer's current referral code and how to share it."""

    customer_id: uuid.UUID
    code: str = Field(examples=["H4KP9WQZ"])
    display: str = Field(examples=["H4KP-9WQZ"], description="Easier to read out.")
    share_link: str = Field(examples=["https://example.com/join?ref=H4KP9WQZ"])
    created_at: datetime
    previous: list[PreviousCode] = Field(description="Replaced codes, newest first.")


async def code_view(session: AsyncSession, customer_id: uuid.UUID, settings: Settings) -> CodeOut:
    """The customer's code as the API shows it; 404 when it has none yet."""
    current = await codes.current_code(session, customer_id)
    if current is None:
        raise Problem(
            404, "code-not-found", "Code not found", f"Customer {customer_id} has no code yet."
        )
    grace = timedelta(days=settings.referrals_code_grace_days)
    return CodeOut(
        customer_id=customer_id,
        code=current.code,
        display=rules.display_code(current.code),
        share_link=settings.referrals_share_link_template.replace("{code}", current.code),
        created_at=current.created_at,
        previous=[
            PreviousCode(
                code=old.code, replaced_at=old.replaced_at, valid_until=old.replaced_at + grace
            )
            for old in await codes.previous_codes(session, customer_id)
        ],
    )


def routes() -> APIRouter:
    """The code routes."""
    router = APIRouter(tags=["referrals"])

    @router.get("/codes/{customer_id}")
    async def get_code(
        customer_id: uuid.UUID, session: Session, settings: AppSettings, _: ReadAuth
    ) -> CodeOut:
        """A customer's referral code, share link and replaced codes (with their grace)."""
        return await code_view(session, customer_id, settings)

    @router.post("/codes/{customer_id}/renew")
    async def renew(
        customer_id: uuid.UUID, session: Session, settings: AppSettings, _: PosAuth
    ) -> CodeOut:
        """Replace a customer's code (e.g. it leaked); the old one works through its grace."""
        if await codes.current_code(session, customer_id) is None:
            raise Problem(
                404, "code-not-found", "Code not found", f"Customer {customer_id} has no code yet."
            )
        await codes.renew_code(session, customer_id, datetime.now(UTC))
        return await code_view(session, customer_id, settings)

    return router
