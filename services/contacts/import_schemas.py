"""Response bodies of the import endpoints."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from services.contacts.models import ImportJob

JobStatus = Literal["receiving", "running", "completed", "failed"]


class ImportJobOut(BaseModel):
    """An import's progress and outcome; `rows_seen` grows batch by batch."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "0b0f5e8e-8d0c-4a0e-9d55-6d3f1f7f2b11",
                    "status": "running",
                    "filename": "customers.csv",
                    "rows_total": 120000,
                    "rows_seen": 45000,
                    "rows_created": 44012,
                    "rows_updated": 730,
                    "rows_unchanged": 201,
                    "rows_failed": 57,
                    "error": None,
                    "created_at": "2026-11-23T08:00:00Z",
                    "finished_at": None,
                    "errors_url": "/v1/contacts/imports/0b0f5e8e-8d0c-4a0e-9d55-6d3f1f7f2b11"
                    "/errors",
                }
            ]
        }
    )

    id: uuid.UUID
    status: JobStatus
    filename: str | None
    rows_total: int | None = Field(
        description="Rows in the file (blank lines excluded); null when this server "
        "process did not receive the file and the job is not finished."
    )
    rows_seen: int = Field(description="Rows handled so far, committed.")
    rows_created: int
    rows_updated: int = Field(description="Rows that matched a customer and changed them.")
    rows_unchanged: int = Field(description="Rows that matched a customer already so.")
    rows_failed: int = Field(description="Rows refused; see `errors_url` for why.")
    error: str | None = Field(description="Why the job stopped, when it failed.")
    created_at: datetime
    finished_at: datetime | None
    errors_url: str


class ImportJobPage(BaseModel):
    """One page of jobs, newest first."""

    items: list[ImportJobOut]
    next_cursor: str | None


class RowErrorOut(BaseModel):
    """One refused row: its line in the file (the header is line 1) and why."""

    line: int
    reason: str


class RowErrorPage(BaseModel):
    """One page of a job's refused rows, in line order."""

    items: list[RowErrorOut]
    next_cursor: str | None


def job_out(job: ImportJob, rows_total: int | None = None) -> ImportJobOut:
    """The API view of a job."""
    if job.status == "completed":
        rows_total = job.rows_seen
    return ImportJobOut(
        id=job.id,
        status=job.status,
        filename=job.filename,
        rows_total=rows_total,
        rows_seen=job.rows_seen,
        rows_created=job.rows_created,
        rows_updated=job.rows_updated,
        rows_unchanged=job.rows_seen - job.rows_created - job.rows_updated - job.rows_failed,
        rows_failed=job.rows_failed,
        error=job.error,
        created_at=job.created_at,
        finished_at=job.finished_at,
        errors_url=f"/v1/contacts/imports/{job.id}/errors",
    )
