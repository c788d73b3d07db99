"""Routes of campaigns: create, start, pause, resume, cancel, live progress and results.

Admins write, readers see. The rules are in `services.messaging.campaigns`; the bodies
live here to keep the feature in its own modules.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal, TypeVar

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from sqlalchemy.ext.asyncio import AsyncSession

from services.messaging import campaign_outcomes, campaigns
from services.messaging.experiments import HOLDOUT
from services.messaging.models import SCHEMA, templates
from shared.auth import AdminAuth, ReadAuth
from shared.http.app import session_dependency
from shared.http.problems import Problem, validation_problem
from shared.settings import Settings

Session = Annotated[AsyncSession, session_dependency(SCHEMA)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Channel = Literal["email", "sms", "whatsapp", "line", "webhook"]
Filterable = Literal["tier", "churn_band", "locale", "rfm_segment", "time_zone"]
Status = Literal["draft", "scheduled", "running", "paused", "cancelled", "completed"]
T = TypeVar("T")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AudienceIn(Strict):
    """Exactly one of a scoring segment or a saved filter (every key must match)."""

    segment_id: uuid.UUID | None = None
    filter: dict[Filterable, Annotated[list[Text], Field(min_length=1, max_length=100)]] | None = (
        Field(default=None, examples=[{"tier": ["gold"], "churn_band": ["high"]}])
    )

    @model_validator(mode="after")
    def _one_kind(self) -> AudienceIn:
        if (self.segment_id is None) == (self.filter is None):
            raise ValueError("give exactly one of segment_id or filter")
        if self.filter is not None and not self.filter:
            raise ValueError("a filter names at least one attribute")
        return self


class OfferIn(Strict):
    """Plain content, or a voucher with a fixed `code` or a `code_template` with `{code}`."""

    kind: Literal["content", "voucher"] = "content"
    title: Text | None = Field(default=None, examples=["10% off your next visit"])
    description: Annotated[str, StringConstraints(max_length=1000)] | None = None
    code: Annotated[str, StringConstraints(pattern=r"^[A-Z0-9-]{3,32}$")] | None = None
    code_template: (
        Annotated[str, StringConstraints(pattern=r"^[A-Z0-9-]{0,20}\{code\}[A-Z0-9-]{0,20}$")]
        | None
    ) = Field(default=None, examples=["XMAS-{code}"])
    amount_minor: int | None = Field(default=None, ge=1, le=10**12, description="Discount.")
    currency: Annotated[str, StringConstraints(pattern="^[A-Z]{3}$")] | None = None
    expires_at: date | None = Field(default=None, description="Shown in the locale's format.")
    reward_id: uuid.UUID | None = Field(default=None, description="A loyalty reward.")
    link: Annotated[str, StringConstraints(pattern="^https?://", max_length=2000)] | None = None

    @model_validator(mode="after")
    def _codes(self) -> OfferIn:
        codes = (self.code is not None) + (self.code_template is not None)
        if self.kind == "voucher" and codes != 1:
            raise ValueError("a voucher has exactly one of code or code_template")
        if self.kind == "content" and codes:
            raise ValueError("codes go with kind voucher")
        if self.currency is not None and self.amount_minor is None:
            raise ValueError("currency goes with amount_minor")
        return self


class ScheduleIn(Strict):
    """`now`; `at` a moment (business zone unless it has an offset); `local` wall time."""

    kind: Literal["now", "at", "local"] = "now"
    at: datetime | None = Field(default=None, examples=["2026-12-01T10:00:00"])

    @model_validator(mode="after")
    def _at(self) -> ScheduleIn:
        if (self.kind == "now") != (self.at is None):
            raise ValueError("`at` goes with kinds at and local, and only with them")
        if self.kind == "local" and self.at is not None and self.at.tzinfo is not None:
            raise ValueError("a local schedule is a wall-clock time, without an offset")
        return self


class ArmIn(Strict):
    """A variant: its share, and what it changes (template, offer or send time)."""

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,32}$")]
    weight: float = Field(default=1.0, gt=0, le=1000)
    template: Text | None = None
    offer: OfferIn | None = None
    schedule: ScheduleIn | None = None


class ExperimentIn(Strict):
    """An A/B/n test with an optional holdout and Bayesian decision rule."""

    arms: list[ArmIn] = Field(min_length=2, max_length=10)
    holdout: float = Field(default=0.0, ge=0, le=0.5, description="Share receiving nothing.")
    min_sample: int = Field(default=1000, ge=10, description="Recipients per arm first.")
    threshold: float = Field(default=0.95, gt=0.5, lt=1, description="P(best) to win.")
    auto_rollout: bool = False
    test_fraction: float = Field(
        default=1.0, gt=0, le=1, description="Share in the test; the rest get the winner."
    )
    rollout_after_hours: float = Field(default=24, gt=0, le=24 * 30)

    @model_validator(mode="after")
    def _arms(self) -> ExperimentIn:
        names = [arm.name for arm in self.arms]
        if len(set(names)) != len(names):
            raise ValueError("arm names must differ")
        if {HOLDOUT, campaigns.REST} & set(names):
            raise ValueError(f"{HOLDOUT} and {campaigns.REST} are reserved arm names")
        if self.auto_rollout and self.test_fraction >= 1:
            raise ValueError("auto_rollout needs a test_fraction below 1 to leave a rest")
        return self


class CampaignIn(Strict):
    name: Text = Field(examples=["Gold members, Hari Raya"])
    audience: AudienceIn
    offer: OfferIn | None = None
    channels: list[Channel] = Field(min_length=1, max_length=5, examples=[["whatsapp", "email"]])
    template: Text = Field(examples=["hari-raya"])
    schedule: ScheduleIn = Field(default_factory=ScheduleIn)
    throttle_per_minute: int | None = Field(default=None, ge=1, le=1_000_000)
    attribution_days: int | None = Field(default=None, ge=1, le=90)
    experiment: ExperimentIn | None = None

    @model_validator(mode="after")
    def _channels(self) -> CampaignIn:
        if len(set(self.channels)) != len(self.channels):
            raise ValueError("each channel once, in priority order")
        return self


class CampaignOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    status: str
    audience: dict[str, Any]
    offer: dict[str, Any] | None
    channels: list[str]
    template: str
    schedule: dict[str, Any]
    throttle_per_minute: int | None
    attribution_days: int
    experiment: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None


class Progress(BaseModel):
    """Ledger counts: `deferred` are queued but due later (schedule, quiet hours, back-off)."""

    total: int
    queued: int
    deferred: int
    reserved: int
    sent: int
    delivered: int
    failed: int
    held_out: int
    cancelled: int
    skipped: dict[str, int] = Field(examples=[{"no-consent": 12, "frequency-cap": 3}])


class CampaignView(CampaignOut):
    progress: Progress


class IntervalOut(BaseModel):
    """An estimate with its 95 % interval."""

    estimate: float
    low: float
    high: float


class ArmOut(BaseModel):
    """One arm: Wilson interval on the conversion rate, normal interval on revenue."""

    variant: str = Field(examples=["A", "B", "holdout", "all"])
    recipients: int
    converted: int
    conversion_rate: IntervalOut
    revenue_minor: dict[str, int] = Field(examples=[{"MYR": 125000}])
    revenue_per_recipient_minor: IntervalOut


class DecisionOut(BaseModel):
    """The Bayesian rule's verdict; `rolled_out` is the winner given to the rest, if any."""

    winner: str | None
    reason: str
    probability_best: dict[str, float]
    rolled_out: str | None


class ResultsOut(BaseModel):
    """Funnel and outcome; `converted` and `revenue_minor` exclude the holdout."""

    sent: int
    delivered: int
    bounced: int
    opened: int
    clicked: int
    converted: int
    revenue_minor: dict[str, int]
    arms: list[ArmOut]
    decision: DecisionOut | None


async def _refusals(work: Awaitable[T]) -> T:
    try:
        return await work
    except campaigns.CampaignRefused as exc:
        title = "Campaign not found" if exc.status == 404 else "Campaign state conflict"
        raise Problem(exc.status, exc.kind, title, exc.detail) from exc


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _check_templates(session: AsyncSession, body: CampaignIn) -> None:
    """Every template named must exist for at least one of the campaign's channels."""
    named = [("template", body.template)]
    if body.experiment:
        named += [
            (f"experiment.arms.{i}.template", arm.template)
            for i, arm in enumerate(body.experiment.arms)
            if arm.template
        ]
    for field, name in named:
        found = await session.execute(
            sa.select(templates.c.id)
            .where(templates.c.name == name, templates.c.channel.in_(body.channels))
            .limit(1)
        )
        if found.first() is None:
            raise validation_problem(field, f"no template {name!r} for these channels")


def routes() -> APIRouter:
    """The campaign routes."""
    router = APIRouter(tags=["messaging"])

    async def view(session: AsyncSession, campaign: Any) -> CampaignView:
        counts = await campaigns.progress(session, campaign.id, now=datetime.now(UTC))
        return CampaignView.model_validate(
            {**campaign._mapping, "progress": Progress.model_validate(counts)}
        )

    @router.post("/campaigns", status_code=201)
    async def create_campaign(
        body: CampaignIn,
        session: Session,
        principal: AdminAuth,
        request: Request,
        response: Response,
    ) -> CampaignOut:
        """Create a draft campaign (start it with `POST /campaigns/{id}/start`)."""
        await _check_templates(session, body)
        values = body.model_dump(mode="json", exclude_none=True)
        values.setdefault("attribution_days", _settings(request).messaging_attribution_days)
        values = {"offer": None, "throttle_per_minute": None, "experiment": None, **values}
        campaign = await campaigns.create(
            session, values, created_by=principal.subject, now=datetime.now(UTC)
        )
        response.headers["Location"] = f"/v1/messaging/campaigns/{campaign.id}"
        return CampaignOut.model_validate(campaign)

    @router.get("/campaigns")
    async def list_campaigns(
        session: Session,
        _: ReadAuth,
        status: Status | None = None,
        after: Annotated[uuid.UUID | None, Query(description="Cursor: the last id seen")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> list[CampaignOut]:
        """Campaigns by id; page on with `after` = the last id of the previous page."""
        found = await campaigns.list_campaigns(session, status=status, after=after, limit=limit)
        return [CampaignOut.model_validate(c) for c in found]

    @router.get("/campaigns/{campaign_id}")
    async def get_campaign(campaign_id: uuid.UUID, session: Session, _: ReadAuth) -> CampaignView:
        """A campaign with its live progress."""
        campaign = await campaigns.get(session, campaign_id)
        if campaign is None:
            raise Problem(
                404, "campaign-not-found", "Campaign not found", f"No campaign {campaign_id}."
            )
        return await view(session, campaign)

    @router.get("/campaigns/{campaign_id}/results")
    async def get_results(campaign_id: uuid.UUID, session: Session, _: ReadAuth) -> ResultsOut:
        """Sent, delivered, bounced, opened, clicked, converted, revenue; arms and decision."""
        campaign = await campaigns.get(session, campaign_id)
        if campaign is None:
            raise Problem(
                404, "campaign-not-found", "Campaign not found", f"No campaign {campaign_id}."
            )
        return ResultsOut.model_validate(await campaign_outcomes.results(session, campaign))

    @router.post("/campaigns/{campaign_id}/start")
    async def start(
        campaign_id: uuid.UUID, session: Session, _: AdminAuth, request: Request
    ) -> CampaignView:
        """Materialise the audience into the send ledger and start sending (409 unless draft)."""
        campaign = await _refusals(
            campaigns.start(
                session, campaign_id, now=datetime.now(UTC), settings=_settings(request)
            )
        )
        return await view(session, campaign)

    @router.post("/campaigns/{campaign_id}/pause")
    async def pause(campaign_id: uuid.UUID, session: Session, _: AdminAuth) -> CampaignView:
        """Stop sending for now; queued messages wait for resume."""
        campaign = await _refusals(campaigns.pause(session, campaign_id, now=datetime.now(UTC)))
        return await view(session, campaign)

    @router.post("/campaigns/{campaign_id}/resume")
    async def resume(campaign_id: uuid.UUID, session: Session, _: AdminAuth) -> CampaignView:
        """Carry on sending a paused campaign."""
        campaign = await _refusals(campaigns.resume(session, campaign_id, now=datetime.now(UTC)))
        return await view(session, campaign)

    @router.post("/campaigns/{campaign_id}/cancel")
    async def cancel(campaign_id: uuid.UUID, session: Session, _: AdminAuth) -> CampaignView:
        """Stop for good: messages not yet sent are cancelled."""
        campaign = await _refusals(campaigns.cancel(session, campaign_id, now=datetime.now(UTC)))
        return await view(session, campaign)

    return router
