"""Routes that hear back after sending: tracked links, the open pixel, provider callbacks.

* `GET /t/c?token=` and `GET /t/o?token=` take no login: the HMAC token the message
  carried is the proof (see `services.messaging.links`). A bad token is a 400 problem; a
  click never redirects anywhere the token does not name.
* `POST /providers/{channel}/status` takes no bearer token either: providers sign the
  body like our own webhooks do (`channels.webhook`), `X-CRM-Signature: sha256=<hex>` =
  HMAC-SHA256(`CRM_MESSAGING_WEBHOOK_SECRET`, `<X-CRM-Timestamp>.<body>`), and a
  timestamp more than 5 minutes away from ours is refused, so a captured callback cannot
  be replayed later.
"""

from __future__ import annotations

import hmac
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy.ext.asyncio import AsyncSession

from services.messaging import links, tracking
from services.messaging.channels.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature
from services.messaging.models import SCHEMA
from services.messaging.tracking import Change, ProviderStatus
from shared.http.app import AppSettings, session_dependency
from shared.http.problems import Problem, validation_problem
from shared.settings import Settings

Session = Annotated[AsyncSession, session_dependency(SCHEMA)]
Token = Annotated[str, Query(min_length=1, max_length=4000, description="From the link.")]

CALLBACK_TOLERANCE_SECONDS = 300
CALLBACK_CHANNELS = frozenset({"email", "sms", "whatsapp", "line", "push", "webhook"})
PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00"
    b"\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
"""A transparent 1x1 GIF."""
NO_STORE = {"Cache-Control": "no-store, max-age=0", "Referrer-Policy": "no-referrer"}
"""Each open and click must reach us; the tracking token must not leak onward."""


class StatusIn(BaseModel):
    """A provider's report on one message, named by our send id or the provider's own id."""

    model_config = ConfigDict(extra="forbid")

    send_id: uuid.UUID | None = None
    provider_message_id: str | None = Field(default=None, min_length=1, max_length=500)
    status: ProviderStatus
    reason: str | None = Field(default=None, max_length=500)

    @model_validator(mode="after")
    def _names_the_message(self) -> StatusIn:
        if self.send_id is None and self.provider_message_id is None:
            raise ValueError("give send_id or provider_message_id")
        return self


class StatusOut(BaseModel):
    send_id: uuid.UUID
    status: str = Field(description="The send's status after the report.")
    changed: bool = Field(description="False for a repeat, or a report the state ignores.")


def _invalid_link(exc: links.InvalidTrackingToken) -> Problem:
    # 400 like the consent and survey links: a link is not a credential to retry with.
    return Problem(400, "tracking-link-invalid", "Invalid link", str(exc))


def _unsigned(detail: str) -> Problem:
    return Problem(401, "provider-signature-invalid", "Invalid signature", detail)


def _check_signature(settings: Settings, request: Request, body: bytes) -> None:
    """A 401 problem unless the callback is signed with our secret, and recent."""
    secret = settings.messaging_webhook_secret
    if secret is None:
        raise _unsigned("Provider callbacks are off: CRM_MESSAGING_WEBHOOK_SECRET is not set.")
    timestamp = request.headers.get(TIMESTAMP_HEADER, "")
    given = request.headers.get(SIGNATURE_HEADER, "")
    try:
        sent_at = float(timestamp)
    except ValueError as exc:
        raise _unsigned(f"{TIMESTAMP_HEADER} must be Unix seconds.") from exc
    if abs(time.time() - sent_at) > CALLBACK_TOLERANCE_SECONDS:
        raise _unsigned(f"{TIMESTAMP_HEADER} is more than 5 minutes from now.")
    expected = signature(secret.get_secret_value(), timestamp, body)
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise _unsigned(f"{SIGNATURE_HEADER} does not match the body and timestamp.")


def _status_in(body: bytes) -> StatusIn:
    try:
        return StatusIn.model_validate_json(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in ("body", *error["loc"]))
        raise validation_problem(field, str(error["msg"])) from exc


def routes() -> APIRouter:
    """The tracking and provider callback routes."""
    router = APIRouter(tags=["messaging"])

    @router.get("/t/c", status_code=302, response_class=RedirectResponse)
    async def click(token: Token, session: Session, settings: AppSettings) -> RedirectResponse:
        """Record the first click of a tracked link (no login), then redirect to it."""
        try:
            send_id, url = links.verify_click(settings, token)
        except links.InvalidTrackingToken as exc:
            raise _invalid_link(exc) from exc
        await tracking.record_click(session, send_id, url, now=datetime.now(UTC))
        return RedirectResponse(url, status_code=302, headers=NO_STORE)

    @router.get("/t/o", response_class=Response)
    async def open_pixel(token: Token, session: Session, settings: AppSettings) -> Response:
        """Record the first opening of an email (no login); answer a transparent 1x1 GIF."""
        try:
            send_id = links.verify_open(settings, token)
        except links.InvalidTrackingToken as exc:
            raise _invalid_link(exc) from exc
        await tracking.record_open(session, send_id, now=datetime.now(UTC))
        return Response(PIXEL, media_type="image/gif", headers=NO_STORE)

    @router.post(
        "/providers/{channel}/status",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": StatusIn.model_json_schema()}},
            }
        },
    )
    async def provider_status(
        channel: str, request: Request, session: Session, settings: AppSettings
    ) -> StatusOut:
        """A provider reports delivered, bounced or failed (signed; repeats change nothing).

        409 while the send is not recorded as sent yet: the provider should report again.
        """
        body = await request.body()
        _check_signature(settings, request, body)
        if channel not in CALLBACK_CHANNELS:
            raise Problem(404, "channel-not-found", "Unknown channel", f"No channel {channel!r}.")
        report = _status_in(body)
        row = await tracking.find_send(
            session,
            channel,
            send_id=report.send_id,
            provider_message_id=report.provider_message_id,
        )
        if row is None:
            raise Problem(
                404, "send-not-found", "Send not found", f"No {channel} message with that id."
            )
        result = await tracking.apply_status(
            session, row["id"], report.status, report.reason, now=datetime.now(UTC)
        )
        if result.change is Change.TOO_EARLY:
            raise Problem(
                409,
                "send-not-sent-yet",
                "Not sent yet",
                f"Send {row['id']} is {result.status}; report again once it is sent.",
            )
        return StatusOut(
            send_id=result.send_id, status=result.status, changed=result.change is Change.APPLIED
        )

    return router
