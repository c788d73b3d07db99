"""GDPR export: everything messaging holds about one customer (for contacts' data export).

Contacts' export calls `GET /v1/messaging/customers/{id}/export` with the caller's admin
token and folds the answer into the file it hands the customer. Recipients merged into
the customer are part of the answer: the messages sent to them were sent to the customer.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from services.messaging.models import (
    SCHEMA,
    conversions,
    recipients,
    segment_members,
    sends,
    survey_responses,
)
from shared.auth import AdminAuth
from shared.db import merges
from shared.db.export import Rows, rows_where
from shared.http.app import session_dependency

Session = Annotated[AsyncSession, session_dependency(SCHEMA)]


class CustomerExport(BaseModel):
    """Every row messaging keeps about a customer, as stored (amounts in minor units)."""

    customer_id: uuid.UUID
    exported_at: datetime
    recipient: dict[str, Any] | None = Field(description="Null when messaging never saw them.")
    merged_recipients: Rows = Field(description="Recipient rows of duplicates merged into them.")
    sends: Rows = Field(description="The send ledger: every message queued, sent or skipped.")
    conversions: Rows = Field(description="Their purchases, with the message each converted.")
    survey_responses: Rows
    segment_memberships: Rows


def routes() -> APIRouter:
    """The routes of this module."""
    router = APIRouter(tags=["messaging"])

    @router.get("/customers/{customer_id}/export")
    async def export_customer(
        customer_id: uuid.UUID, session: Session, _: AdminAuth
    ) -> CustomerExport:
        """Everything messaging holds about a customer (GDPR access request)."""
        ids = [customer_id, *await merges.merged_into(session, recipients, customer_id)]
        recipient_rows = await rows_where(session, recipients, "customer_id", ids, "customer_id")
        return CustomerExport(
            customer_id=customer_id,
            exported_at=datetime.now(UTC),
            recipient=next((r for r in recipient_rows if r["customer_id"] == customer_id), None),
            merged_recipients=[r for r in recipient_rows if r["customer_id"] != customer_id],
            sends=await rows_where(session, sends, "customer_id", ids, "created_at"),
            conversions=await rows_where(session, conversions, "customer_id", ids, "purchased_at"),
            survey_responses=await rows_where(
                session, survey_responses, "customer_id", ids, "answered_at"
            ),
            segment_memberships=await rows_where(
                session, segment_members, "customer_id", ids, "entered_at"
            ),
        )

    return router
