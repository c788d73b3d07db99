"""GDPR export: everything loyalty holds about one customer (for contacts' data export).

Contacts' export calls `GET /v1/loyalty/customers/{id}/export` with the caller's admin
token and folds the answer into the file it hands the customer. Members merged into the
customer are part of the answer: their history is the customer's history.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from services.loyalty.models import (
    SCHEMA,
    ledger,
    lots,
    members,
    purchases,
    redemptions,
    refunds,
    stamp_cards,
    stamp_entries,
    tier_changes,
)
from shared.auth import AdminAuth
from shared.db import merges
from shared.db.export import Rows, rows_where
from shared.http.app import session_dependency

Session = Annotated[AsyncSession, session_dependency(SCHEMA)]


class CustomerExport(BaseModel):
    """Every row loyalty keeps about a customer, as stored (amounts in minor units)."""

    customer_id: uuid.UUID
    exported_at: datetime
    member: dict[str, Any] | None = Field(description="Null when loyalty never saw them.")
    merged_members: Rows = Field(description="Member rows of duplicates merged into them.")
    purchases: Rows = Field(description="With their lines, as the till reported them.")
    refunds: Rows
    ledger: Rows = Field(description="Every points entry, oldest first.")
    lots: Rows
    redemptions: Rows
    stamp_cards: Rows
    stamp_entries: Rows
    tier_changes: Rows


def routes() -> APIRouter:
    """The routes of this module."""
    router = APIRouter(tags=["loyalty"])

    @router.get("/customers/{customer_id}/export")
    async def export_customer(
        customer_id: uuid.UUID, session: Session, _: AdminAuth
    ) -> CustomerExport:
        """Everything loyalty holds about a customer (GDPR access request)."""
        merged = await merges.merged_into(session, members, customer_id)
        ids = [customer_id, *merged]
        member_rows = await rows_where(session, members, "customer_id", ids, "customer_id")
        member = next((m for m in member_rows if m["customer_id"] == customer_id), None)
        purchase_rows = await rows_where(session, purchases, "customer_id", ids, "purchased_at")
        card_rows = await rows_where(session, stamp_cards, "customer_id", ids, "created_at")
        return CustomerExport(
            customer_id=customer_id,
            exported_at=datetime.now(UTC),
            member=member,
            merged_members=[m for m in member_rows if m["customer_id"] != customer_id],
            purchases=purchase_rows,
            refunds=await rows_where(
                session, refunds, "purchase_id", [p["id"] for p in purchase_rows], "refunded_at"
            ),
            ledger=await rows_where(session, ledger, "customer_id", ids, "id"),
            lots=await rows_where(session, lots, "customer_id", ids, "id"),
            redemptions=await rows_where(session, redemptions, "customer_id", ids, "created_at"),
            stamp_cards=card_rows,
            stamp_entries=await rows_where(
                session, stamp_entries, "card_id", [c["id"] for c in card_rows], "id"
            ),
            tier_changes=await rows_where(session, tier_changes, "customer_id", ids, "id"),
        )

    return router
