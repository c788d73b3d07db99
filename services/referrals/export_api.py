"""GDPR export: everything referrals holds about one customer (for contacts' data export).

Contacts' export calls `GET /v1/referrals/customers/{id}/export` with the caller's admin
token when `CRM_CONTACTS_EXPORT_SERVICES` names referrals, and folds the answer into the
file it hands the customer. The shape follows loyalty's part: rows as stored, one list
per table, and customers merged into this one included (their history is its history).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from services.referrals.models import (
    SCHEMA,
    codes,
    customers,
    fingerprints,
    purchases,
    referrals,
    refunds,
    rewards,
)
from shared.auth import AdminAuth
from shared.db import merges
from shared.db.export import Rows, rows_where
from shared.http.app import session_dependency

Session = Annotated[AsyncSession, session_dependency(SCHEMA)]


class CustomerExport(BaseModel):
    """Every row referrals keeps about a customer, as stored (amounts in minor units)."""

    customer_id: uuid.UUID
    exported_at: datetime
    customer: dict[str, Any] | None = Field(
        description="The projection row (keys, tier, signup); null when never seen."
    )
    merged_customers: Rows = Field(description="Rows of duplicates merged into them.")
    codes: Rows = Field(description="Their referral codes, current and replaced.")
    referrals_as_referrer: Rows = Field(description="Friends they referred.")
    referrals_as_referee: Rows = Field(description="Who referred them (at most one each).")
    rewards: Rows = Field(description="Points they were given, and any reversal.")
    fingerprints: Rows = Field(description="Device and payment fingerprints seen at signup.")
    purchases: Rows = Field(description="Purchases kept to decide qualification.")
    refunds: Rows


def routes() -> APIRouter:
    """The routes of this module."""
    router = APIRouter(tags=["referrals"])

    @router.get("/customers/{customer_id}/export")
    async def export_customer(
        customer_id: uuid.UUID, session: Session, _: AdminAuth
    ) -> CustomerExport:
        """Everything referrals holds about a customer (GDPR access request)."""
        ids = [customer_id, *await merges.merged_into(session, customers, customer_id)]
        customer_rows = await rows_where(session, customers, "customer_id", ids, "customer_id")
        purchase_rows = await rows_where(
            session, purchases, "customer_id", ids, "purchased_at", "id"
        )
        purchase_ids = [p["id"] for p in purchase_rows]
        return CustomerExport(
            customer_id=customer_id,
            exported_at=datetime.now(UTC),
            customer=next((c for c in customer_rows if c["customer_id"] == customer_id), None),
            merged_customers=[c for c in customer_rows if c["customer_id"] != customer_id],
            codes=await rows_where(session, codes, "customer_id", ids, "created_at", "code"),
            referrals_as_referrer=await rows_where(
                session, referrals, "referrer_id", ids, "attributed_at", "id"
            ),
            referrals_as_referee=await rows_where(
                session, referrals, "referee_id", ids, "attributed_at", "id"
            ),
            rewards=await rows_where(session, rewards, "customer_id", ids, "rewarded_at", "id"),
            fingerprints=await rows_where(
                session,
                fingerprints,
                "customer_id",
                ids,
                "seen_at",
                "kind",
                "value",
            ),
            purchases=purchase_rows,
            refunds=await rows_where(
                session, refunds, "purchase_id", purchase_ids, "refunded_at", "id"
            ),
        )

    return router
