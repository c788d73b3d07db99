"""Routes of attribution at the till: a code given after signup, and fingerprints.

`ReferralOut` is the one shape of a referral in this API; the review routes use it too.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.referrals import attribution, qualification
from services.referrals.models import SCHEMA, customers
from shared.auth import PosAuth
from shared.http.app import AppSettings, session_dependency
from shared.http.problems import Problem

Session = Annotated[AsyncSession, session_dependency(SCHEMA)]
Fingerprint = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class AttributionIn(BaseModel):
    """A referral code the new customer gives at the till after signing up."""

    model_config = ConfigDict(extra="forbid")

    referee_id: uuid.UUID
    code: str = Field(max_length=40, examples=["H4KP-9WQZ"], description="Any case, dashes ok.")
    device_fingerprint: Fingerprint | None = None
    payment_fingerprint: Fingerprint | None = None


class FingerprintIn(BaseModel):
    """A device or payment fingerprint seen for a customer (a hash, never a card number)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["device", "payment"]
    value: Fingerprint = Field(examples=["sha256:9f2c4e..."])


class FingerprintOut(BaseModel):
    customer_id: uuid.UUID
    kind: str
    value: str
    created: bool = Field(description="False when it was already known.")


class ReferralOut(BaseModel):
    """A referral. `flag_reasons` say why a `flagged` one waits for review."""

    id: uuid.UUID
    referrer_id: uuid.UUID
    referee_id: uuid.UUID
    code: str
    source: str = Field(examples=["signup", "late"])
    status: str = Field(examples=["pending", "flagged", "qualified", "rejected"])
    flag_reasons: list[str] = Field(examples=[["self_referral"]])
    programme_version: int | None
    attributed_at: datetime
    purchase_id: uuid.UUID | None
    qualified_at: datetime | None
    closed_at: datetime | None
    note: str | None
    reviewed_by: str | None
    reviewed_at: datetime | None
    created_at: datetime


def referral_out(row: Any) -> ReferralOut:
    """The API shape of a `referrals` row."""
    return ReferralOut.model_validate(dict(row._mapping))


_REFUSALS: dict[str, tuple[int, str, str | None]] = {
    # reason: (status, title, the field at fault for a 422)
    "malformed_code": (422, "Malformed referral code", "body.code"),
    "unknown_code": (422, "Unknown referral code", "body.code"),
    "window_passed": (422, "Too late for a referral code", "body.referee_id"),
    "already_referred": (409, "Already referred", None),
    "unknown_customer": (404, "Customer not found", None),
}


def _problem(refused: attribution.AttributionRefused) -> Problem:
    """A refusal as problem+json: its `type` names the reason, 422s also name the field."""
    status, title, field = _REFUSALS[refused.reason]
    extensions: dict[str, Any] = {"reason": refused.reason}
    if field is not None:
        extensions["errors"] = [{"field": field, "message": refused.message, "type": "value_error"}]
    return Problem(status, refused.reason.replace("_", "-"), title, refused.message, **extensions)


async def _require_customer(session: AsyncSession, customer_id: uuid.UUID) -> None:
    found = await session.execute(
        select(customers.c.customer_id).where(customers.c.customer_id == customer_id)
    )
    if found.scalar_one_or_none() is None:
        raise Problem(
            404, "customer-not-found", "Customer not found", f"No customer {customer_id}."
        )


def routes() -> APIRouter:
    """The attribution and fingerprint routes."""
    router = APIRouter(tags=["referrals"])

    @router.post("/attributions", status_code=201)
    async def attribute(
        body: AttributionIn,
        session: Session,
        settings: AppSettings,
        _: PosAuth,
        response: Response,
    ) -> ReferralOut:
        """Credit a referrer for a customer who signed up recently (200: already done)."""
        given = [("device", body.device_fingerprint), ("payment", body.payment_fingerprint)]
        try:
            made = await attribution.attribute(
                session,
                referee_id=body.referee_id,
                code_text=body.code,
                source="late",
                at=datetime.now(UTC),
                settings=settings,
                fingerprints=[(kind, value) for kind, value in given if value is not None],
            )
        except attribution.AttributionRefused as refused:
            raise _problem(refused) from refused
        if not made.created:
            response.status_code = 200
        elif made.status == "pending":
            # The friend may have bought already (the code was given at that purchase).
            await qualification.evaluate(
                session, made.referral_id, now=datetime.now(UTC), settings=settings
            )
        response.headers["Location"] = f"/v1/referrals/{made.referral_id}"
        row = await attribution.referral(session, made.referral_id)
        return referral_out(row)

    @router.post("/customers/{customer_id}/fingerprints", status_code=201)
    async def add_fingerprint(
        customer_id: uuid.UUID,
        body: FingerprintIn,
        session: Session,
        _: PosAuth,
        response: Response,
    ) -> FingerprintOut:
        """Remember a device or payment fingerprint of a customer, for the abuse guards."""
        await _require_customer(session, customer_id)
        stored = await attribution.store_fingerprints(
            session, customer_id, [(body.kind, body.value)], datetime.now(UTC)
        )
        if not stored:
            response.status_code = 200
        return FingerprintOut(
            customer_id=customer_id, kind=body.kind, value=body.value, created=bool(stored)
        )

    return router
