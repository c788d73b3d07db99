"""Versioned referral programmes: each change is a new version with its own validity.

Versions are never edited, so a referral keeps the rules it was attributed under
(`referrals.programme_version`) even after the admin changes the programme. At any
moment the newest version whose [starts_at, ends_at) contains it is in force, so a new
version overrides an older open-ended one without having to close it first.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.referrals.models import programmes
from services.referrals.rules import Programme

ProgrammeRow = Row[Any]


class UnknownProgramme(LookupError):
    """No programme has this version."""


async def create_programme(
    session: AsyncSession,
    *,
    starts_at: datetime,
    ends_at: datetime | None,
    rules: Programme,
    created_by: str | None,
    now: datetime,
) -> ProgrammeRow:
    """Store a new version and return its row (the version is assigned by the database)."""
    result = await session.execute(
        insert(programmes)
        .values(
            starts_at=starts_at,
            ends_at=ends_at,
            rules=rules.model_dump(mode="json"),
            created_by=created_by,
            created_at=now,
        )
        .returning(*programmes.c)
    )
    return result.one()


async def list_programmes(
    session: AsyncSession, *, before: int | None, limit: int
) -> list[ProgrammeRow]:
    """Versions, newest first; `before` is the last version of the previous page."""
    statement = select(programmes).order_by(programmes.c.version.desc()).limit(limit)
    if before is not None:
        statement = statement.where(programmes.c.version < before)
    return list((await session.execute(statement)).all())


async def row_at(session: AsyncSession, moment: datetime) -> ProgrammeRow | None:
    """The row of the version in force at `moment`, if any."""
    result = await session.execute(
        select(programmes)
        .where(
            programmes.c.starts_at <= moment,
            or_(programmes.c.ends_at.is_(None), programmes.c.ends_at > moment),
        )
        .order_by(programmes.c.version.desc())
        .limit(1)
    )
    return result.one_or_none()


async def version_row(session: AsyncSession, version: int) -> ProgrammeRow | None:
    """The row of one version, if it exists."""
    result = await session.execute(select(programmes).where(programmes.c.version == version))
    return result.one_or_none()


async def programme_at(session: AsyncSession, moment: datetime) -> tuple[int, Programme] | None:
    """(version, rules) of the programme in force at `moment`; None when there is none."""
    row = await row_at(session, moment)
    if row is None:
        return None
    return int(row.version), Programme.model_validate(row.rules)


async def programme_version(session: AsyncSession, version: int) -> Programme:
    """The rules of one version; UnknownProgramme when it does not exist."""
    row = await version_row(session, version)
    if row is None:
        raise UnknownProgramme(f"no programme version {version}")
    return Programme.model_validate(row.rules)
