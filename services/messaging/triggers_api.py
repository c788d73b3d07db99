"""Routes that switch journeys on or off and set their delay, template, offer and options."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.messaging import surveys, triggers
from services.messaging.models import SCHEMA, templates
from services.messaging.models import triggers as triggers_table
from shared.auth import AdminAuth, ReadAuth
from shared.http.app import session_dependency
from shared.http.problems import Problem, validation_problem

Session = Annotated[AsyncSession, session_dependency(SCHEMA)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
CHANNELS = frozenset({"email", "sms", "whatsapp", "line", "webhook"})
MAX_DELAY = 90 * 24 * 3600


class TriggerIn(BaseModel):
    """A journey's settings; `options` are merged over the journey's defaults."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool
    delay_seconds: int | None = Field(
        default=None, ge=0, le=MAX_DELAY, examples=[3600], description="Default: the journey's."
    )
    template: Name | None = Field(default=None, description="Defaults to the journey's name.")
    offer: dict[str, Any] | None = Field(
        default=None, examples=[{"kind": "discount", "percent": 10, "voucher_code": "BDAY10"}]
    )
    options: dict[str, Any] = Field(default_factory=dict, examples=[{"channels": ["email"]}])


class TriggerOut(BaseModel):
    name: str
    description: str
    enabled: bool
    delay_seconds: int
    template: str
    offer: dict[str, Any] | None
    options: dict[str, Any]
    updated_at: datetime | None


def _out(trigger: triggers.Trigger) -> TriggerOut:
    return TriggerOut(
        name=trigger.name,
        description=triggers.JOURNEYS[trigger.name].description,
        enabled=trigger.enabled,
        delay_seconds=trigger.delay_seconds,
        template=trigger.template,
        offer=trigger.offer,
        options=trigger.options,
        updated_at=trigger.updated_at,
    )


async def _check(session: AsyncSession, name: str, body: TriggerIn) -> None:
    """Refuse options a journey does not know and settings that could never send."""
    journey = triggers.JOURNEYS[name]
    for key in body.options:
        if key != "channels" and key not in journey.options:
            raise validation_problem(f"options.{key}", f"not an option of {name}")
    channels = body.options.get("channels")
    if channels is not None and (
        not isinstance(channels, list)
        or not channels
        or any(channel not in CHANNELS for channel in channels)
    ):
        raise validation_problem("options.channels", f"a non-empty list of {sorted(CHANNELS)}")
    for key in ("window_days", "cooldown_days", "min_points"):
        value = body.options.get(key)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 0
        ):
            raise validation_problem(f"options.{key}", "a whole number, 0 or more")
    hour = body.options.get("hour")
    if hour is not None and (not isinstance(hour, int) or not 0 <= hour <= 23):
        raise validation_problem("options.hour", "an hour from 0 to 23")
    bands = body.options.get("bands")
    if bands is not None and (
        not isinstance(bands, list) or not bands or not all(isinstance(b, str) for b in bands)
    ):
        raise validation_problem("options.bands", "a non-empty list of churn bands")
    if "survey_id" in body.options:
        await _check_survey(session, body.options["survey_id"])
    elif name == "post_purchase_survey" and body.enabled:
        raise validation_problem("options.survey_id", "the survey to send is required")
    if body.enabled:
        template = body.template or journey.template
        found = await session.execute(
            select(templates.c.id).where(templates.c.name == template).limit(1)
        )
        if found.first() is None:
            raise validation_problem("template", f"no template named {template!r}")


async def _check_survey(session: AsyncSession, raw: Any) -> None:
    try:
        survey_id = uuid.UUID(str(raw))
    except ValueError as exc:
        raise validation_problem("options.survey_id", "a survey id") from exc
    if await surveys.get(session, survey_id) is None:
        raise validation_problem("options.survey_id", f"no survey {survey_id}")


def routes() -> APIRouter:
    """The trigger routes."""
    router = APIRouter(tags=["messaging"])

    @router.get("/triggers")
    async def list_triggers(session: Session, _: ReadAuth) -> list[TriggerOut]:
        """Every journey with its settings (journeys never saved are off)."""
        return [_out(trigger) for trigger in await triggers.load_all(session)]

    @router.get("/triggers/{name}")
    async def get_trigger(name: str, session: Session, _: ReadAuth) -> TriggerOut:
        """One journey's settings."""
        if name not in triggers.JOURNEYS:
            raise _not_found(name)
        return _out(await triggers.load(session, name))

    @router.put("/triggers/{name}")
    async def put_trigger(name: str, body: TriggerIn, session: Session, _: AdminAuth) -> TriggerOut:
        """Switch a journey on or off and set its delay, template, offer and options."""
        if name not in triggers.JOURNEYS:
            raise _not_found(name)
        await _check(session, name, body)
        values = {
            "enabled": body.enabled,
            "delay_seconds": (
                triggers.JOURNEYS[name].delay_seconds
                if body.delay_seconds is None
                else body.delay_seconds
            ),
            "template": body.template,
            "offer": body.offer,
            "options": body.options,
            "updated_at": datetime.now(UTC),
        }
        await session.execute(
            insert(triggers_table)
            .values(name=name, **values)
            .on_conflict_do_update(index_elements=[triggers_table.c.name], set_=values)
        )
        return _out(await triggers.load(session, name))

    return router


def _not_found(name: str) -> Problem:
    return Problem(
        404,
        "trigger-not-found",
        "Trigger not found",
        f"No journey {name!r}; the journeys are {', '.join(triggers.JOURNEYS)}.",
    )
