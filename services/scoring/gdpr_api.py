"""GDPR export: everything scoring holds about one customer (for contacts' data export).

Contacts' export calls `GET /v1/scoring/customers/{id}/export` with the caller's admin
token. Customers merged into this one are part of the answer: their purchases were moved
to it, and their (emptied) rows say so.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.scoring.models import SCHEMA, customers, purchases, refunds, segment_members, segments
from shared.auth import AdminAuth
from shared.db import merges
from shared.db.export import Rows, rows_where
from shared.http.app import session_dependency

Session = Annotated[AsyncSession, session_dependency(SCHEMA)]


class CustomerExport(BaseModel):
    """Every row scoring keeps about a customer, as stored (amounts in minor units)."""

    customer_id: uuid.UUID
    exported_at: datetime
    customer: dict[str, Any] | None = Field(
        description="State and scores; null when scoring never saw them."
    )
    merged_customers: Rows = Field(description="Rows of duplicates merged into them.")
    purchases: Rows
    refunds: Rows
    segments: Rows = Field(description="Saved segments they are a member of.")


def routes() -> APIRouter:
    """The routes of this module."""
    router = APIRouter(tags=["scoring"])

    @router.get("/customers/{customer_id}/export")
    async def export_customer(
        customer_id: uuid.UUID, session: Session, _: AdminAuth
    ) -> CustomerExport:
        """Everything scoring holds about a customer (GDPR access request)."""
        ids = [customer_id, *await merges.merged_into(session, customers, customer_id)]
        rows = await rows_where(session, customers, "customer_id", ids, "customer_id")
        purchase_rows = await rows_where(session, purchases, "customer_id", ids, "purchased_at")
        memberships = (
            await session.execute(
                select(segments.c.id, segments.c.name, segment_members.c.entered_at)
                .join(segment_members, segment_members.c.segment_id == segments.c.id)
                .where(segment_members.c.customer_id == customer_id)
                .order_by(segment_members.c.entered_at)
            )
        ).all()
        return CustomerExport(
            customer_id=customer_id,
            exported_at=datetime.now(UTC),
            customer=next((r for r in rows if r["customer_id"] == customer_id), None),
            merged_customers=[r for r in rows if r["customer_id"] != customer_id],
            purchases=purchase_rows,
            refunds=await rows_where(
                session, refunds, "purchase_id", [p["id"] for p in purchase_rows], "refunded_at"
            ),
            segments=[dict(m._mapping) for m in memberships],
        )

    return router
