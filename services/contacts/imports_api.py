"""Routes of the contacts service for CSV imports and the CSV export.

Mounted by `services.contacts.api` before `/{contact_id}`. The router's lifespan owns the
`Importer` that runs import jobs in the background (FastAPI runs an included router's
lifespan inside the app's, so jobs stop before the database pools close).
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, FastAPI, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.requests import ClientDisconnect

from services.contacts import errors, exports, import_repository
from services.contacts.deps import Session
from services.contacts.filters import ContactQuery
from services.contacts.import_files import NotCsv, TooLarge
from services.contacts.import_rows import FIELDS, HeaderError
from services.contacts.import_schemas import (
    ImportJobOut,
    ImportJobPage,
    RowErrorOut,
    RowErrorPage,
    job_out,
)
from services.contacts.imports import Importer
from shared.auth import AdminAuth
from shared.http.problems import Problem

CSV_TYPE = "text/csv"
_EXAMPLE = (
    "given_name,family_name,email,phone,birthday,tags,attr:favourite_drink\n"
    "Aisyah,Rahman,aisyah@example.my,012-345 6789,03-14,vip;coffee,teh tarik\n"
    "Somchai,Srisuk,somchai@example.th,+66 81 234 5678,1988-07-02,,\n"
)
_ERRORS_PAGE = 5000


def routes() -> APIRouter:
    """The import and export routes, with the lifespan that runs import jobs."""
    running: dict[str, Importer] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        importer = Importer(app.state.runtime, app.state.settings)
        running["importer"] = importer
        await importer.start()
        try:
            yield
        finally:
            await importer.stop()

    def importer() -> Importer:
        found = running.get("importer")
        if found is None or found.stopping:
            raise Problem(
                503,
                "imports-unavailable",
                "Imports unavailable",
                "The service is starting or stopping; try again shortly.",
                headers={"Retry-After": "5"},
            )
        return found

    router = APIRouter(tags=["contacts"], lifespan=lifespan)

    @router.post(
        "/imports",
        status_code=202,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    CSV_TYPE: {"schema": {"type": "string"}, "example": _EXAMPLE},
                },
            }
        },
        responses={
            413: {"description": "Over the row or size limit"},
            415: {"description": "Not sent as text/csv"},
            422: {"description": "Empty, not UTF-8 CSV, or unknown columns"},
        },
    )
    async def start_import(
        request: Request,
        response: Response,
        _: AdminAuth,
        filename: Annotated[
            str | None, Query(max_length=255, description="Name to show for the file")
        ] = None,
    ) -> ImportJobOut:
        """Upload customers as CSV (the raw body, `text/csv`); rows go in in the background."""
        runner = importer()
        _require_csv(request.headers.get("content-type", ""))
        name = filename or _disposition_filename(request.headers.get("content-disposition"))
        try:
            job = await runner.receive(request.stream(), name)
        except HeaderError as exc:
            raise Problem(
                422,
                "validation-error",
                "Validation error",
                f"{exc} The first line must name the columns: {', '.join(FIELDS)}, or attr:<name>.",
                errors=exc.errors,
            ) from exc
        except NotCsv as exc:
            problem = errors.invalid("body", str(exc))
            problem.extensions["line"] = exc.line
            raise problem from exc
        except TooLarge as exc:
            raise Problem(413, "import-too-large", "Import too large", f"{exc}.") from exc
        except ClientDisconnect as exc:
            raise Problem(
                400, "upload-interrupted", "Upload interrupted", "The upload did not finish."
            ) from exc
        response.headers["Location"] = f"/v1/contacts/imports/{job.id}"
        return job_out(job, runner.rows_total(job.id))

    @router.get("/imports")
    async def list_imports(
        session: Session,
        _: AdminAuth,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        cursor: str | None = None,
    ) -> ImportJobPage:
        """Import jobs, newest first; cursor-paginated."""
        runner = importer()
        after = None
        if cursor:
            try:
                after = _decode(cursor)
            except ValueError as exc:
                raise errors.invalid("query.cursor", "not a cursor this API made") from exc
        jobs = await import_repository.list_jobs(session, limit + 1, after)
        more = len(jobs) > limit
        jobs = jobs[:limit]
        return ImportJobPage(
            items=[job_out(job, runner.rows_total(job.id)) for job in jobs],
            next_cursor=_encode(jobs[-1].created_at, jobs[-1].id) if more and jobs else None,
        )

    @router.get("/imports/{job_id}")
    async def get_import(job_id: uuid.UUID, session: Session, _: AdminAuth) -> ImportJobOut:
        """An import's progress and counters."""
        job = await import_repository.get_job(session, job_id)
        if job is None:
            raise _job_not_found(job_id)
        return job_out(job, importer().rows_total(job.id))

    @router.get("/imports/{job_id}/errors")
    async def import_errors(
        job_id: uuid.UUID,
        session: Session,
        _: AdminAuth,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$")] = None,
    ) -> RowErrorPage:
        """An import's refused rows with line numbers (header = line 1); cursor-paginated."""
        if await import_repository.get_job(session, job_id) is None:
            raise _job_not_found(job_id)
        rows = await import_repository.row_errors(
            session, job_id, limit + 1, int(cursor) if cursor else 0
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return RowErrorPage(
            items=[RowErrorOut(line=row.line, reason=row.reason) for row in rows],
            next_cursor=str(rows[-1].line) if more and rows else None,
        )

    @router.get(
        "/imports/{job_id}/errors.csv",
        response_class=StreamingResponse,
        responses={200: {"content": {CSV_TYPE: {"example": "line,reason\n7,email: ...\n"}}}},
    )
    async def import_errors_csv(
        job_id: uuid.UUID, session: Session, _: AdminAuth
    ) -> StreamingResponse:
        """An import's refused rows as CSV (`line,reason`), to fix and upload again."""
        if await import_repository.get_job(session, job_id) is None:
            raise _job_not_found(job_id)
        body = _error_lines(importer(), job_id)
        return StreamingResponse(
            body,
            media_type=f"{CSV_TYPE}; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="import-{job_id}-errors.csv"'},
        )

    @router.get(
        "/export.csv",
        response_class=StreamingResponse,
        responses={
            200: {
                "content": {
                    CSV_TYPE: {
                        "example": "id,given_name,family_name,email,phone,...\r\n"
                        "5f0c...,Aisyah,Rahman,aisyah@example.my,+60123456789,...\r\n"
                    }
                }
            }
        },
    )
    async def export_csv(
        _: AdminAuth,
        criteria: ContactQuery,
    ) -> StreamingResponse:
        """Customers as CSV, with the filters of `GET /v1/contacts`; streamed, oldest first."""
        body = exports.stream_csv(importer().sessions(), criteria)
        # The header row is made before answering, so a failing query is still a problem
        # document and not a cut-off download.
        first = await anext(body)
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        return StreamingResponse(
            _chain(first, body),
            media_type=f"{CSV_TYPE}; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="contacts-{stamp}.csv"'},
        )

    return router


def _require_csv(content_type: str) -> None:
    kind, _, parameters = content_type.partition(";")
    charset = ""
    for parameter in parameters.split(";"):
        key, _, value = parameter.strip().partition("=")
        if key.lower() == "charset":
            charset = value.strip().strip('"').lower()
    if kind.strip().lower() != CSV_TYPE or charset not in ("", "utf-8", "utf8", "us-ascii"):
        raise Problem(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            "Send the CSV file itself as the request body, with `Content-Type: text/csv` "
            "(UTF-8), e.g. `curl --data-binary @customers.csv -H 'Content-Type: text/csv'`.",
        )


def _disposition_filename(header: str | None) -> str | None:
    if not header:
        return None
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key.lower() == "filename" and value:
            return value.strip().strip('"')[:255] or None
    return None


def _job_not_found(job_id: uuid.UUID) -> Problem:
    return Problem(404, "import-not-found", "Import not found", f"No import {job_id}.")


def _encode(created_at: datetime, job_id: uuid.UUID) -> str:
    raw = f"{created_at.isoformat()}|{job_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode(cursor: str) -> tuple[datetime, uuid.UUID]:
    padded = cursor + "=" * (-len(cursor) % 4)
    try:
        created, _, job_id = base64.urlsafe_b64decode(padded.encode()).decode().partition("|")
    except UnicodeDecodeError as exc:
        raise ValueError("not a cursor") from exc
    return datetime.fromisoformat(created), uuid.UUID(job_id)


async def _chain(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk


async def _error_lines(runner: Importer, job_id: uuid.UUID) -> AsyncIterator[bytes]:
    # Pages in short transactions of their own: the request's ends before the body is sent.
    yield b"line,reason\r\n"
    after = 0
    while True:
        async with runner.sessions()() as session:
            rows = await import_repository.row_errors(session, job_id, _ERRORS_PAGE, after)
        if not rows:
            return
        yield exports.encode_rows([[str(row.line), row.reason] for row in rows])
        after = rows[-1].line
