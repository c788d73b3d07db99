"""Routes of the referral list and of the review of flagged referrals.

The list is the service's collection itself (`GET /v1/referrals`). A route with an empty
path cannot be included without a prefix, so `services.referrals.api` calls `install`
on its own router instead of including a sub-router. `/{referral_id}` uses the `uuid`
path converter, so it can never swallow `/programmes`, `/stats` and the like.

Approving sends a flagged referral back to `pending` and evaluates it at once, so a
referee who already made a qualifying purchase is rewarded without waiting for the next.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import Row, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.referrals.attributions_api import ReferralOut, referral_out
from services.referrals.models import SCHEMA, referrals
from shared.auth import AdminAuth, ReadAuth
from shared.http.app import AppSettings, session_dependency
from shared.http.problems import Problem, validation_problem

Session = Annotated[AsyncSession, session_dependency(SCHEMA)]
Note = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]
Status = Literal[
    "pending", "flagged", "qualified", "unqualified", "expired", "rejected", "reversed"
]


class ApproveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: Note | None = Field(default=None, examples=["Siblings sharing a phone; genuine."])


class RejectIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Note = Field(examples=["Same person with two accounts."])


class ReferralPage(BaseModel):
    """Referrals, newest first; pass `next_cursor` as `cursor` for the next page."""

    items: list[ReferralOut]
    next_cursor: str | None


def _encode_cursor(row: Row[Any]) -> str:
    raw = f"{row.created_at.isoformat()}|{row.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, _, referral_id = base64.urlsafe_b64decode(padded).decode().partition("|")
        return datetime.fromisoformat(created), uuid.UUID(referral_id)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise validation_problem("query.cursor", "not a cursor this API made") from exc


def _not_found(referral_id: uuid.UUID) -> Problem:
    return Problem(404, "referral-not-found", "Referral not found", f"No referral {referral_id}.")


async def _locked(session: AsyncSession, referral_id: uuid.UUID) -> Row[Any]:
    """The referral, locked for this transaction so two reviewers cannot both act."""
    row = (
        await session.execute(
            select(referrals).where(referrals.c.id == referral_id).with_for_update()
        )
    ).one_or_none()
    if row is None:
        raise _not_found(referral_id)
    return row


def _wrong_status(row: Row[Any], action: str, allowed: str) -> Problem:
    return Problem(
        409,
        "referral-status-conflict",
        "Wrong status for this action",
        f"Only {allowed} referrals can be {action}; this one is {row.status}.",
        status_now=row.status,
    )


async def _current(session: AsyncSession, referral_id: uuid.UUID) -> ReferralOut:
    row = (await session.execute(select(referrals).where(referrals.c.id == referral_id))).one()
    return referral_out(row)


def install(router: APIRouter) -> None:
    """Add the list and review routes to `router` (the service's own, see the docstring)."""

    @router.get("")
    async def list_referrals(
        session: Session,
        _: ReadAuth,
        status: Status | None = None,
        referrer_id: uuid.UUID | None = None,
        referee_id: uuid.UUID | None = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
    ) -> ReferralPage:
        """Referrals, newest first, by status, referrer or referee (e.g. the review queue)."""
        statement = select(referrals)
        if status is not None:
            statement = statement.where(referrals.c.status == status)
        if referrer_id is not None:
            statement = statement.where(referrals.c.referrer_id == referrer_id)
        if referee_id is not None:
            statement = statement.where(referrals.c.referee_id == referee_id)
        if cursor:
            statement = statement.where(
                tuple_(referrals.c.created_at, referrals.c.id) < _decode_cursor(cursor)
            )
        statement = statement.order_by(referrals.c.created_at.desc(), referrals.c.id.desc())
        rows = list((await session.execute(statement.limit(limit + 1))).all())
        more = len(rows) > limit
        rows = rows[:limit]
        return ReferralPage(
            items=[referral_out(row) for row in rows],
            next_cursor=_encode_cursor(rows[-1]) if more and rows else None,
        )

    @router.get("/{referral_id:uuid}")
    async def get_referral(referral_id: uuid.UUID, session: Session, _: ReadAuth) -> ReferralOut:
        """One referral."""
        row = (
            await session.execute(select(referrals).where(referrals.c.id == referral_id))
        ).one_or_none()
        if row is None:
            raise _not_found(referral_id)
        return referral_out(row)

    @router.post("/{referral_id:uuid}/approve")
    async def approve(
        referral_id: uuid.UUID,
        session: Session,
        settings: AppSettings,
        principal: AdminAuth,
        body: ApproveIn | None = None,
    ) -> ReferralOut:
        """Clear a flagged referral: it becomes pending and is evaluated at once (409 else)."""
        # Imported here so that this module loads even where qualification is absent.
        from services.referrals.qualification import evaluate

        row = await _locked(session, referral_id)
        if row.status != "flagged":
            raise _wrong_status(row, "approved", "flagged")
        now = datetime.now(UTC)
        values: dict[str, Any] = {
            "status": "pending",
            "reviewed_by": principal.subject,
            "reviewed_at": now,
        }
        if body is not None and body.note is not None:
            values["note"] = body.note
        await session.execute(update(referrals).where(referrals.c.id == referral_id).values(values))
        await evaluate(session, referral_id, now=now, settings=settings)
        return await _current(session, referral_id)

    @router.post("/{referral_id:uuid}/reject")
    async def reject(
        referral_id: uuid.UUID, body: RejectIn, session: Session, principal: AdminAuth
    ) -> ReferralOut:
        """Close a flagged or pending referral without rewards (409 once decided)."""
        row = await _locked(session, referral_id)
        if row.status not in ("flagged", "pending"):
            raise _wrong_status(row, "rejected", "flagged or pending")
        now = datetime.now(UTC)
        await session.execute(
            update(referrals)
            .where(referrals.c.id == referral_id)
            .values(
                status="rejected",
                closed_at=now,
                note=body.reason,
                reviewed_by=principal.subject,
                reviewed_at=now,
            )
        )
        return await _current(session, referral_id)
