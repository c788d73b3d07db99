"""Routes of the contacts service for merges and GDPR requests; mounted by `api.py`.

`POST /{id}/merge` folds a duplicate into a customer, `GET /{id}/export` answers a
subject access request (this service's data plus the other services' parts), and
`DELETE /{id}` erases a customer's personal data. All need the `admin` scope.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.contacts import gdpr, merging, profiles, repository
from services.contacts.deps import AppSettings, Session
from services.contacts.models import Contact
from services.contacts.schemas import ContactOut
from shared.auth import AdminAuth
from shared.events.contacts import SignupSource
from shared.runtime import Runtime

_GONE = {"description": "A contact was merged or erased, or a merge into itself"}
_MISSING = {"description": "No such contact"}


class MergeIn(BaseModel):
    """The duplicate to fold into the customer named in the path."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"duplicate_id": "5b0e9f4c-2a57-4d83-9a0e-8f4f1c6d2b11"}]},
    )

    duplicate_id: uuid.UUID


class ConsentRecordOut(BaseModel):
    """One consent change from the history."""

    channel: str
    status: str
    source: str
    proof: str | None
    changed_at: datetime
    recorded_at: datetime


class SignupOut(BaseModel):
    """How and when the customer joined."""

    source: SignupSource
    store_id: str | None
    referral_code: str | None
    signed_up_at: datetime


class MergedDuplicateOut(BaseModel):
    """A profile that was merged into this customer (its personal data moved or was cleared)."""

    id: uuid.UUID
    signup_source: SignupSource
    signup_store: str | None
    created_at: datetime
    merged_at: datetime


class ImportErrorsNote(BaseModel):
    """Import errors are kept per file line, not per customer."""

    included: bool = False
    note: str = (
        "Import errors are stored per file and line without a customer id, so they cannot "
        "be attributed to a customer and are not part of the export."
    )


class ContactExport(BaseModel):
    """Everything the CRM holds about one customer (GDPR art. 15 and 20)."""

    customer_id: uuid.UUID
    generated_at: datetime
    profile: ContactOut = Field(description="The profile with its current consents.")
    consent_history: list[ConsentRecordOut]
    signup: SignupOut
    merged_duplicates: list[MergedDuplicateOut]
    import_errors: ImportErrorsNote = Field(default_factory=ImportErrorsNote)
    services: dict[str, Any] = Field(
        default_factory=dict,
        description='Each other service\'s part by name; `{"error": ...}` when it failed.',
    )


def routes() -> APIRouter:
    """The merge and GDPR routes."""
    router = APIRouter(tags=["contacts"])

    @router.post("/{contact_id}/merge", responses={404: _MISSING, 409: _GONE})
    async def merge_contacts(
        contact_id: uuid.UUID, body: MergeIn, session: Session, _: AdminAuth
    ) -> ContactOut:
        """Fold a duplicate into this customer; publishes `customer.merged`."""
        survivor = await merging.merge(session, contact_id, body.duplicate_id)
        return profiles.to_out(survivor, await repository.consents_of(session, [survivor.id]))

    @router.get("/{contact_id}/export", responses={404: _MISSING})
    async def export_contact(
        contact_id: uuid.UUID, request: Request, settings: AppSettings, _: AdminAuth
    ) -> ContactExport:
        """Everything held about a customer, with the parts of the other services."""
        # A session of its own, closed before waiting on other services: a pooled
        # connection must not idle through their timeouts.
        async with _sessions(request)() as session, session.begin():
            document = _export_document(await gdpr.collect(session, contact_id))
        document.services = await gdpr.gather_parts(
            settings.contacts_export_services,
            contact_id,
            authorization=request.headers.get("authorization"),
            timeout=gdpr.EXPORT_TIMEOUT_SECONDS,
        )
        return document

    @router.delete("/{contact_id}", status_code=204, responses={404: _MISSING, 409: _GONE})
    async def erase_contact(contact_id: uuid.UUID, session: Session, _: AdminAuth) -> Response:
        """Erase a customer's personal data (the id stays); publishes `customer.erased`."""
        await gdpr.erase(session, contact_id)
        return Response(status_code=204)

    return router


def _sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    runtime: Runtime = request.app.state.runtime
    return runtime.sessions(profiles.SOURCE)  # the service name


def _export_document(local: gdpr.LocalExport) -> ContactExport:
    contact = local.contact
    return ContactExport(
        customer_id=contact.id,
        generated_at=datetime.now(UTC),
        profile=profiles.to_out(contact, local.consents),
        consent_history=[
            ConsentRecordOut(
                channel=r.channel,
                status=r.status,
                source=r.source,
                proof=r.proof,
                changed_at=r.changed_at,
                recorded_at=r.recorded_at,
            )
            for r in local.history
        ],
        signup=SignupOut(
            source=contact.signup_source,
            store_id=contact.signup_store,
            referral_code=contact.referral_code,
            signed_up_at=contact.created_at,
        ),
        merged_duplicates=[_duplicate(d) for d in local.duplicates],
    )


def _duplicate(contact: Contact) -> MergedDuplicateOut:
    return MergedDuplicateOut(
        id=contact.id,
        signup_source=contact.signup_source,
        signup_store=contact.signup_store,
        created_at=contact.created_at,
        merged_at=contact.updated_at,  # a merged contact changes no more after its merge
    )
