"""Every query of imports: jobs, their error reports, and the set-based batch writes.

Batches use the session's asyncpg connection directly for `COPY` and array parameters
(the transaction is still the session's: the caller runs an ORM statement first, which
begins it). Only the caller commits.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from sqlalchemy import select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.contacts.import_lines import CONTACT_COLUMNS, OUTBOX_COLUMNS
from services.contacts.import_resolve import BatchPlan, ContactState
from services.contacts.models import SCHEMA, ImportJob, ImportRowError

_CONTACTS = f'"{SCHEMA}".contacts'
_STATE_COLUMNS = (
    "id, status, given_name, family_name, email, phone, card_number, birthday_month, "
    "birthday_day, birthday_year, locale, time_zone, tags, attributes, signup_store"
)
# An update rewrites every profile column but the ones fixed at signup.
_CHANGED_COLUMNS = [
    c for c in CONTACT_COLUMNS if c not in ("signup_source", "signup_store", "created_at")
]


async def add_job(session: AsyncSession, job: ImportJob) -> None:
    """Store a new job."""
    session.add(job)
    await session.flush()


async def get_job(session: AsyncSession, job_id: uuid.UUID) -> ImportJob | None:
    """The job, or None."""
    return await session.get(ImportJob, job_id)


async def list_jobs(
    session: AsyncSession, limit: int, after: tuple[datetime, uuid.UUID] | None
) -> list[ImportJob]:
    """Jobs newest first, after a (created_at, id) position."""
    statement = select(ImportJob).order_by(ImportJob.created_at.desc(), ImportJob.id.desc())
    if after is not None:
        statement = statement.where(tuple_(ImportJob.created_at, ImportJob.id) < after)
    return list((await session.execute(statement.limit(limit))).scalars())


async def unfinished_jobs(session: AsyncSession) -> list[ImportJob]:
    """Jobs still running (or interrupted by a stop), oldest first."""
    statement = (
        select(ImportJob).where(ImportJob.status == "running").order_by(ImportJob.created_at)
    )
    return list((await session.execute(statement)).scalars())


async def row_errors(
    session: AsyncSession, job_id: uuid.UUID, limit: int, after_line: int
) -> list[ImportRowError]:
    """A job's rejected lines in line order, after `after_line`."""
    statement = (
        select(ImportRowError)
        .where(ImportRowError.job_id == job_id, ImportRowError.line > after_line)
        .order_by(ImportRowError.line)
        .limit(limit)
    )
    return list((await session.execute(statement)).scalars())


async def claim_batch(session: AsyncSession, job_id: uuid.UUID) -> tuple[str, int] | None:
    """Lock the job row for this batch; its (status, rows_seen), None when it is gone.

    Run first in a batch transaction: it begins the transaction the raw statements
    below join, and two runners of one job (after a restart, say) queue here; the one
    that finds `rows_seen` moved on knows the other did the batch.
    """
    statement = (
        select(ImportJob.status, ImportJob.rows_seen)
        .where(ImportJob.id == job_id)
        .with_for_update()
    )
    row = (await session.execute(statement)).one_or_none()
    return None if row is None else (row.status, row.rows_seen)


async def driver(session: AsyncSession) -> Any:
    """The session's asyncpg connection, inside the session's transaction."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    apg = raw.driver_connection
    assert apg is not None and apg.is_in_transaction(), "run an ORM statement first"
    return apg


async def lock_matching(
    apg: Any, emails: list[str], phones: list[str], cards: list[str]
) -> list[ContactState]:
    """Contacts holding any of these identifiers, locked for update in id order."""
    rows = await apg.fetch(
        f"SELECT {_STATE_COLUMNS} FROM {_CONTACTS} "
        "WHERE email = ANY($1::text[]) OR phone = ANY($2::text[]) "
        "OR card_number = ANY($3::text[]) ORDER BY id FOR UPDATE",
        emails,
        phones,
        cards,
    )
    return [
        ContactState(
            id=str(row["id"]),
            status=row["status"],
            given_name=row["given_name"],
            family_name=row["family_name"],
            email=row["email"],
            phone=row["phone"],
            card_number=row["card_number"],
            birthday_month=row["birthday_month"],
            birthday_day=row["birthday_day"],
            birthday_year=row["birthday_year"],
            locale=row["locale"],
            time_zone=row["time_zone"],
            tags=list(row["tags"] or []),
            attributes=dict(row["attributes"] or {}),
            signup_store=row["signup_store"],
        )
        for row in rows
    ]


async def taken_cards(apg: Any, cards: list[str]) -> set[str]:
    """Which of these card numbers some contact already holds."""
    if not cards:
        return set()
    rows = await apg.fetch(
        f"SELECT card_number FROM {_CONTACTS} WHERE card_number = ANY($1::text[])", cards
    )
    return {row["card_number"] for row in rows}


async def write_batch(apg: Any, job_id: uuid.UUID, plan: BatchPlan) -> None:
    """Write a resolved batch: changed and new contacts, their events, the bad lines."""
    if plan.updates:
        # Events of one customer keep commit order in the outbox (see add_envelope): take
        # their subjects' locks, sorted so two writers cannot wait on each other.
        subjects = sorted({contact.id for contact in plan.updates})
        await apg.execute(
            "SELECT count(pg_advisory_xact_lock(hashtextextended(subject, 0))) "
            "FROM (SELECT unnest($1::text[]) AS subject ORDER BY 1) AS ordered",
            subjects,
        )
        await _update_contacts(apg, plan)
    if plan.created:
        # New ids: no other transaction can be writing their events, so no lock needed.
        await apg.copy_to_table(
            "contacts",
            schema_name=SCHEMA,
            columns=CONTACT_COLUMNS,
            source=_once(b"".join(plan.insert_lines())),
            format="text",
        )
    if plan.events:
        await apg.copy_to_table(
            "outbox",
            schema_name=SCHEMA,
            columns=OUTBOX_COLUMNS,
            source=_once(b"".join(plan.events)),
            format="text",
        )
    if plan.errors:
        await apg.copy_records_to_table(
            "import_errors",
            schema_name=SCHEMA,
            columns=["job_id", "line", "reason"],
            records=[(job_id, line, reason) for line, reason in plan.errors],
        )


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _update_contacts(apg: Any, plan: BatchPlan) -> None:
    await apg.execute(
        "CREATE TEMP TABLE import_changes (id uuid PRIMARY KEY, given_name text, "
        "family_name text, email text, phone text, card_number text, birthday_month smallint, "
        "birthday_day smallint, birthday_year smallint, locale text, time_zone text, "
        "tags text[], attributes jsonb, updated_at timestamptz) ON COMMIT DROP"
    )
    await apg.copy_records_to_table(
        "import_changes",
        columns=_CHANGED_COLUMNS,
        records=[
            (
                c.id,
                c.given_name,
                c.family_name,
                c.email,
                c.phone,
                c.card_number,
                c.birthday_month,
                c.birthday_day,
                c.birthday_year,
                c.locale,
                c.time_zone,
                c.tags,
                json.dumps(c.attributes),
                plan.updated_at(c),
            )
            for c in plan.updates
        ],
    )
    if plan.moved_identifiers:
        # Unique indexes are checked row by row: when identifiers move between contacts
        # within one batch, clear the moving ones first so no row meets a stale holder.
        await apg.execute(
            f"UPDATE {_CONTACTS} AS c SET email = NULL, phone = NULL, card_number = NULL "
            "FROM import_changes AS s WHERE c.id = s.id AND (c.email, c.phone, c.card_number) "
            "IS DISTINCT FROM (s.email, s.phone, s.card_number)"
        )
    await apg.execute(
        f"UPDATE {_CONTACTS} AS c SET given_name = s.given_name, family_name = s.family_name, "
        "email = s.email, phone = s.phone, card_number = s.card_number, "
        "birthday_month = s.birthday_month, birthday_day = s.birthday_day, "
        "birthday_year = s.birthday_year, locale = s.locale, time_zone = s.time_zone, "
        "tags = s.tags, attributes = s.attributes, updated_at = s.updated_at "
        "FROM import_changes AS s WHERE c.id = s.id"
    )


async def count_batch(session: AsyncSession, job_id: uuid.UUID, seen: int, plan: BatchPlan) -> None:
    """Add a batch's outcome to the job's counters (same transaction as its rows)."""
    await session.execute(
        update(ImportJob)
        .where(ImportJob.id == job_id)
        .values(
            rows_seen=ImportJob.rows_seen + seen,
            rows_created=ImportJob.rows_created + len(plan.created),
            rows_updated=ImportJob.rows_updated + plan.updated,
            rows_failed=ImportJob.rows_failed + len(plan.errors),
        )
    )


async def finish_job(
    session: AsyncSession, job_id: uuid.UUID, status: str, error: str | None, now: datetime
) -> None:
    """Mark the job completed or failed."""
    await session.execute(
        update(ImportJob)
        .where(ImportJob.id == job_id, ImportJob.status == "running")
        .values(status=status, error=error, finished_at=now)
    )
