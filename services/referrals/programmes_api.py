"""Routes of the referral programme's versions (admin defines, anyone with read sees)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from services.referrals import programmes
from services.referrals.models import SCHEMA
from services.referrals.rules import Programme
from shared.auth import AdminAuth, ReadAuth
from shared.http.app import session_dependency
from shared.http.problems import Problem, validation_problem

Session = Annotated[AsyncSession, session_dependency(SCHEMA)]

_EXAMPLE_RULES = {
    "referrer_points": 500,
    "referee_points": 200,
    "referrer_points_by_tier": {"gold": 800},
    "minimum_purchase_minor": 5000,
    "currency": "MYR",
    "qualify_within_days": 30,
    "monthly_cap": 10,
}


class ProgrammeIn(BaseModel):
    """A new version: in force from `starts_at` until `ends_at` (open-ended when null)."""

    model_config = ConfigDict(extra="forbid")

    starts_at: AwareDatetime
    ends_at: AwareDatetime | None = None
    rules: Programme = Field(examples=[_EXAMPLE_RULES])


class ProgrammeOut(BaseModel):
    """One stored version of the programme."""

    version: int = Field(examples=[3])
    starts_at: datetime
    ends_at: datetime | None
    rules: Programme
    created_by: str | None
    created_at: datetime


def _out(row: programmes.ProgrammeRow) -> ProgrammeOut:
    values: dict[str, Any] = dict(row._mapping)
    return ProgrammeOut.model_validate(values)


def routes() -> APIRouter:
    """The programme routes."""
    router = APIRouter(tags=["referrals"])

    @router.post("/programmes", status_code=201)
    async def create(
        body: ProgrammeIn, session: Session, principal: AdminAuth, response: Response
    ) -> ProgrammeOut:
        """Add a programme version; the newest version covering a moment is in force then."""
        if body.ends_at is not None and body.ends_at <= body.starts_at:
            raise validation_problem("body.ends_at", "must be after starts_at")
        row = await programmes.create_programme(
            session,
            starts_at=body.starts_at,
            ends_at=body.ends_at,
            rules=body.rules,
            created_by=principal.subject,
            now=datetime.now(UTC),
        )
        response.headers["Location"] = f"/v1/referrals/programmes/{row.version}"
        return _out(row)

    @router.get("/programmes")
    async def list_programmes(
        session: Session,
        _: ReadAuth,
        before: Annotated[
            int | None, Query(ge=1, description="Cursor: the last version of the previous page")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> list[ProgrammeOut]:
        """All versions, newest first; page on with `before` = the last version seen."""
        rows = await programmes.list_programmes(session, before=before, limit=limit)
        return [_out(row) for row in rows]

    @router.get("/programmes/current")
    async def current(session: Session, _: ReadAuth) -> ProgrammeOut:
        """The version in force now."""
        row = await programmes.row_at(session, datetime.now(UTC))
        if row is None:
            raise Problem(
                404, "programme-not-found", "No programme", "No referral programme is in force."
            )
        return _out(row)

    @router.get("/programmes/{version:int}")
    async def get_programme(version: int, session: Session, _: ReadAuth) -> ProgrammeOut:
        """One version."""
        row = await programmes.version_row(session, version)
        if row is None:
            raise Problem(
                404, "programme-not-found", "No programme", f"No programme version {version}."
            )
        return _out(row)

    return router
