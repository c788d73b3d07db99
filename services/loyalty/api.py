"""HTTP routes of the loyalty service, mounted under `/v1/loyalty`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated

import phonenumbers
from fastapi import APIRouter, Query, Response
from pydantic import AwareDatetime
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.loyalty import (
    gdpr_api,
    ledger,
    merging,
    purchases,
    rewards,
    rewards_api,
    stamps,
    tiers,
    tiers_api,
)
from services.loyalty.handlers import policy_from
from services.loyalty.models import SCHEMA, earning_rules, members
from services.loyalty.models import ledger as ledger_table
from services.loyalty.models import purchases as purchases_table
from services.loyalty.schemas import (
    AdjustmentIn,
    AffordableReward,
    CustomerRef,
    ExpiringPoints,
    LedgerEntryOut,
    MemberOut,
    PurchaseIn,
    PurchaseOut,
    RefundIn,
    RefundOut,
    RulesIn,
    RulesOut,
    StampCardSummary,
)
from shared.auth import AdminAuth, PosAuth, ReadAuth
from shared.events.loyalty import PointsAdjusted
from shared.events.purchases import PurchaseCompleted, PurchaseLine, PurchaseRefunded
from shared.http.app import AppSettings, session_dependency
from shared.http.problems import Problem, validation_problem
from shared.pipeline.outbox import add_event

Session = Annotated[AsyncSession, session_dependency(SCHEMA)]
EXPIRING_WINDOW = timedelta(days=30)


async def _resolve(session: AsyncSession, ref: CustomerRef, region: str) -> uuid.UUID:
    """The member a till names by id, card, phone or email (from the local projection)."""
    if ref.id is not None:
        return await merging.survivor_of(session, ref.id)
    if ref.card_number is not None:
        column, value = members.c.card_number, ref.card_number.replace(" ", "").replace("-", "")
    elif ref.phone is not None:
        try:
            number = phonenumbers.parse(ref.phone, region)
        except phonenumbers.NumberParseException as exc:
            raise validation_problem("body.customer.phone", "not a phone number") from exc
        column = members.c.phone
        value = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    else:
        column, value = members.c.email, (ref.email or "").strip().lower()
    found = (
        await session.execute(
            select(members.c.customer_id).where(column == value, members.c.status == "active")
        )
    ).scalar_one_or_none()
    if found is None:
        raise Problem(404, "member-not-found", "Member not found", "No member matches.")
    return uuid.UUID(str(found))


def routes() -> APIRouter:
    """The loyalty routes; health and readiness come from the platform's app factory."""
    router = APIRouter(tags=["loyalty"])
    router.include_router(rewards_api.routes())
    router.include_router(tiers_api.routes())
    router.include_router(gdpr_api.routes())

    @router.post("/purchases", status_code=201)
    async def record_purchase(
        body: PurchaseIn,
        session: Session,
        settings: AppSettings,
        principal: PosAuth,
        response: Response,
    ) -> PurchaseOut:
        """Record a sale at the till and answer with the points it earns."""
        now = datetime.now(UTC)
        customer_id = await _resolve(session, body.customer, settings.contacts_default_region)
        event = PurchaseCompleted(
            purchase_id=uuid.uuid4(),
            customer_id=customer_id,
            store_id=principal.store_for(body.store_id),
            order_id=body.order_id,
            currency=body.currency,
            total_minor=body.total_minor,
            lines=[PurchaseLine(**line.model_dump()) for line in body.lines],
            channel=body.channel,
            purchased_at=body.purchased_at or now,
        )
        if event.purchased_at > now + timedelta(minutes=5):
            raise validation_problem("body.purchased_at", "a purchase cannot be in the future")
        recorded = await purchases.record_purchase(
            session, event, policy_from(settings), origin="http", now=now
        )
        if recorded.created:
            await add_event(session, SCHEMA, event, source=purchases.SOURCE)
        else:
            response.status_code = 200
        response.headers["Location"] = f"/v1/loyalty/purchases/{recorded.purchase_id}"
        held = await ledger.balances(session, recorded.customer_id, now)
        return PurchaseOut(
            purchase_id=recorded.purchase_id,
            customer_id=recorded.customer_id,
            points=recorded.points,
            balance=held.balance,
            available=held.available,
            pending=held.pending,
            repeated=not recorded.created,
        )

    @router.post("/purchases/{purchase_id}/refunds", status_code=201)
    async def refund_purchase(
        purchase_id: uuid.UUID, body: RefundIn, session: Session, _: PosAuth
    ) -> RefundOut:
        """Refund part or all of a purchase; the refunded share of its points goes back."""
        now = datetime.now(UTC)
        event = PurchaseRefunded(
            refund_id=body.refund_id or uuid.uuid4(),
            purchase_id=purchase_id,
            customer_id=uuid.UUID(int=0),
            currency="XXX",
            amount_minor=body.amount_minor,
            refunded_at=body.refunded_at or now,
        )
        stored = (
            await session.execute(
                select(purchases_table.c.customer_id, purchases_table.c.currency).where(
                    purchases_table.c.id == purchase_id
                )
            )
        ).one_or_none()
        if stored is None:
            raise Problem(
                404, "purchase-not-found", "Purchase not found", f"No purchase {purchase_id}."
            )
        event = event.model_copy(
            update={"customer_id": stored.customer_id, "currency": stored.currency}
        )
        try:
            points, created = await purchases.record_refund(session, event, now=now)
        except purchases.RefundRefused as exc:
            raise Problem(409, "refund-refused", "Refund refused", str(exc)) from exc
        if created:
            await add_event(session, SCHEMA, event, source=purchases.SOURCE)
        held = await ledger.balances(session, stored.customer_id, now)
        return RefundOut(
            refund_id=event.refund_id,
            purchase_id=purchase_id,
            points_reversed=points,
            balance=held.balance,
        )

    @router.get("/members/{customer_id}")
    async def member(customer_id: uuid.UUID, session: Session, _: ReadAuth) -> MemberOut:
        """A member's points (available, pending, expiring soon) and tier, in one call."""
        now = datetime.now(UTC)
        row = (
            await session.execute(select(members).where(members.c.customer_id == customer_id))
        ).one_or_none()
        if row is None:
            raise Problem(404, "member-not-found", "Member not found", f"No member {customer_id}.")
        held = await ledger.balances(session, customer_id, now)
        soon = await ledger.expiring(session, customer_id, now, EXPIRING_WINDOW)
        multiplier, discount = await tiers.benefits(session, row.tier)
        cards = await stamps.cards_of(session, customer_id)
        affordable = await rewards.affordable_rewards(
            session, customer_id, row.tier, held.available, now
        )
        return MemberOut(
            customer_id=customer_id,
            status=row.status,
            tier=row.tier,
            earn_multiplier=multiplier,
            privilege_discount_percent=discount,
            balance=held.balance,
            available=held.available,
            pending=held.pending,
            debt=held.debt,
            expiring_soon=[ExpiringPoints(points=p, expires_at=t) for p, t in soon],
            stamp_cards=[StampCardSummary.model_validate(card) for card in cards],
            affordable_rewards=[
                AffordableReward(id=r.id, name=r.name, points_cost=r.points_cost)
                for r in affordable
            ],
        )

    @router.get("/members/{customer_id}/ledger")
    async def member_ledger(
        customer_id: uuid.UUID,
        session: Session,
        _: ReadAuth,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        before: Annotated[int | None, Query(description="Entries older than this id")] = None,
    ) -> list[LedgerEntryOut]:
        """The member's ledger, newest first: the audit trail of every change."""
        statement = select(ledger_table).where(ledger_table.c.customer_id == customer_id)
        if before is not None:
            statement = statement.where(ledger_table.c.id < before)
        rows = await session.execute(statement.order_by(ledger_table.c.id.desc()).limit(limit))
        return [
            LedgerEntryOut(
                id=r.id,
                kind=r.kind,
                points=r.points,
                reference=r.reference,
                reason=r.reason,
                actor=r.actor,
                created_at=r.created_at,
            )
            for r in rows
        ]

    @router.post("/members/{customer_id}/adjustments", status_code=201)
    async def adjust(
        customer_id: uuid.UUID, body: AdjustmentIn, session: Session, principal: AdminAuth
    ) -> MemberOut:
        """Add or take points by hand; the reason is mandatory and kept in the ledger."""
        now = datetime.now(UTC)
        exists = (
            await session.execute(
                select(members.c.customer_id).where(members.c.customer_id == customer_id)
            )
        ).scalar_one_or_none()
        if exists is None:
            raise Problem(404, "member-not-found", "Member not found", f"No member {customer_id}.")
        await ledger.lock_member(session, customer_id, now)
        common = {"reference": None, "now": now, "reason": body.reason, "actor": principal.subject}
        if body.points > 0:
            await ledger.credit(session, customer_id, kind="adjust", points=body.points, **common)  # type: ignore[arg-type]
        else:
            try:
                await ledger.debit(
                    session,
                    customer_id,
                    kind="adjust",
                    points=-body.points,
                    available_only=True,
                    allow_debt=False,
                    **common,  # type: ignore[arg-type]
                )
            except ledger.InsufficientPoints as exc:
                raise Problem(
                    409,
                    "insufficient-points",
                    "Insufficient points",
                    str(exc),
                    available=exc.available,
                    wanted=exc.wanted,
                ) from exc
        held = await ledger.balances(session, customer_id, now)
        await add_event(
            session,
            SCHEMA,
            PointsAdjusted(
                customer_id=customer_id,
                points=body.points,
                reason=body.reason,
                balance=held.balance,
                adjusted_at=now,
            ),
            source=purchases.SOURCE,
        )
        return await member(customer_id, session, principal)

    @router.post("/rules", status_code=201)
    async def save_rules(body: RulesIn, session: Session, principal: AdminAuth) -> RulesOut:
        """Save a new version of the earning rules (invalid rules: 422 naming the field)."""
        effective = body.effective_from or datetime.now(UTC)
        row = (
            await session.execute(
                earning_rules.insert()
                .values(
                    effective_from=effective,
                    rules=body.rules.model_dump(mode="json"),
                    created_by=principal.subject,
                    created_at=datetime.now(UTC),
                )
                .returning(earning_rules.c.version)
            )
        ).scalar_one()
        return RulesOut(version=row, effective_from=effective, rules=body.rules)

    @router.get("/rules")
    async def current_rules(
        session: Session, _: ReadAuth, at: AwareDatetime | None = None
    ) -> RulesOut:
        """The earning rules in force now (or at `at`)."""
        moment = at or datetime.now(UTC)
        version, rules = await purchases.rules_at(session, moment)
        effective = None
        if version is not None:
            effective = (
                await session.execute(
                    select(earning_rules.c.effective_from).where(earning_rules.c.version == version)
                )
            ).scalar_one()
        return RulesOut(version=version, effective_from=effective, rules=rules)

    return router
