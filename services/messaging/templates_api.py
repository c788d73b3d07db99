"""Routes of message templates: CRUD for admins, and a preview against a real customer.

A template is identified by (name, channel, locale); `default` is the locale used when
none of a customer's fits (see `services.messaging.templates`). Saving validates: a syntax
error or an unknown variable is a 422 that names the field, the line and the variable.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy.ext.asyncio import AsyncSession

from services.messaging import links, templates
from services.messaging.models import SCHEMA, recipients
from shared.auth import AdminAuth, ReadAuth
from shared.http.app import AppSettings, session_dependency
from shared.http.problems import Problem

Session = Annotated[AsyncSession, session_dependency(SCHEMA)]
Name = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
ChannelName = Literal["email", "sms", "whatsapp", "line", "push", "webhook"]
LocaleTag = Annotated[str, Path(pattern=r"^(default|[a-z]{2,3}(-[A-Z]{2})?)$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TemplateIn(Strict):
    subject: Annotated[str, StringConstraints(max_length=500)] | None = Field(
        default=None, examples=["Selamat hari jadi, {{ name }}!"]
    )
    body: Annotated[str, StringConstraints(min_length=1, max_length=20_000)] = Field(
        examples=["Hai {{ name }}, baucar anda: {{ voucher_code }} (sah hingga {{ expiry_date }})."]
    )


class TemplateOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    channel: str
    locale: str
    subject: str | None
    body: str
    created_at: datetime
    updated_at: datetime


class PreviewIn(Strict):
    customer_id: uuid.UUID
    channel: ChannelName = "email"
    locale: str | None = Field(default=None, description="Defaults to the customer's locale.")
    offer: dict[str, Any] | None = Field(
        default=None, examples=[{"voucher_code": "HBD-7KQ9", "amount_minor": 1000}]
    )


class PreviewOut(BaseModel):
    locale: str = Field(description="The template variant used.")
    subject: str | None
    body: str


def _invalid(exc: templates.TemplateInvalid) -> Problem:
    where = f"{exc.field}, line {exc.line}" if exc.line is not None else exc.field
    return Problem(
        422,
        "validation-error",
        "Validation error",
        f"The template is not valid: {where}: {exc.message}.",
        errors=[{"field": exc.field, "line": exc.line, "message": exc.message, "type": "template"}],
    )


def _not_found(name: str) -> Problem:
    return Problem(
        404, "not-found", "Not found", f"No template '{name}' with that channel and locale."
    )


def routes() -> APIRouter:
    """Template CRUD and preview."""
    router = APIRouter(prefix="/templates")

    @router.get("", response_model=list[TemplateOut])
    async def list_templates(session: Session, _: ReadAuth) -> list[Any]:
        """Every template variant."""
        return list(await templates.listing(session))

    @router.get("/{name}", response_model=list[TemplateOut])
    async def get_template(name: Name, session: Session, _: ReadAuth) -> list[Any]:
        """The variants of one template."""
        found = await templates.variants(session, name)
        if not found:
            raise Problem(404, "not-found", "Not found", f"No template '{name}'.")
        return list(found)

    @router.put("/{name}/{channel}/{locale}", response_model=TemplateOut)
    async def put_template(
        name: Name,
        channel: ChannelName,
        locale: LocaleTag,
        body: TemplateIn,
        session: Session,
        response: Response,
        _: AdminAuth,
    ) -> Any:
        """Create or replace a variant; invalid templates are refused with 422."""
        try:
            row, created = await templates.upsert(
                session,
                name=name,
                channel=channel,
                locale=locale,
                subject=body.subject,
                body=body.body,
            )
        except templates.TemplateInvalid as exc:
            raise _invalid(exc) from exc
        response.status_code = 201 if created else 200
        return row

    @router.delete("/{name}/{channel}/{locale}", status_code=204)
    async def delete_template(
        name: Name, channel: ChannelName, locale: LocaleTag, session: Session, _: AdminAuth
    ) -> Response:
        """Remove a variant."""
        if not await templates.delete(session, name, channel, locale):
            raise _not_found(name)
        return Response(status_code=204)

    @router.post("/{name}/preview", response_model=PreviewOut)
    async def preview(
        name: Name, body: PreviewIn, session: Session, settings: AppSettings, _: AdminAuth
    ) -> PreviewOut:
        """Render a template for a real customer of the projection, without sending."""
        person = (
            (
                await session.execute(
                    sa.select(recipients).where(recipients.c.customer_id == body.customer_id)
                )
            )
            .mappings()
            .one_or_none()
        )
        if person is None:
            raise Problem(404, "not-found", "Not found", f"No customer {body.customer_id}.")
        locale = body.locale or person["locale"]
        chosen = templates.choose(await templates.variants(session, name, body.channel), locale)
        if chosen is None:
            raise Problem(
                404, "not-found", "Not found", f"No template '{name}' for channel {body.channel}."
            )
        unsubscribe = links.unsubscribe_url(settings, body.customer_id, body.channel)
        try:
            rendered = templates.compile_template(chosen["subject"], chosen["body"]).render(
                templates.context(
                    person,
                    body.offer,
                    locale=locale or chosen["locale"],
                    unsubscribe_url=unsubscribe,
                )
            )
        except templates.TemplateInvalid as exc:
            raise _invalid(exc) from exc
        return PreviewOut(locale=chosen["locale"], subject=rendered.subject, body=rendered.body)

    return router
