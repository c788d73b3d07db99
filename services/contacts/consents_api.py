"""Routes of the contacts service for consents; mounted by `services.contacts.api`.

Clients record statements (`PUT .../consents/{channel}`) and read the current state and
history. Customers follow signed links without logging in: the confirmation of a double
opt-in and the one-click unsubscribe (RFC 8058). A `GET` on either link only shows a page
with a button, because mail scanners open links; the `POST` acts.
"""

from __future__ import annotations

import html
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from services.contacts import consent_tokens, consents, errors, repository
from services.contacts.consents import ClientSource, ConsentChange, Outcome, Recorded
from services.contacts.deps import AppSettings, Session
from services.contacts.models import Consent, ConsentRecord
from services.contacts.schemas import ConsentOut
from shared.auth import AdminAuth, PosAuth, Principal, ReadAuth, Scope
from shared.events.contacts import Channel, ConsentStatus
from shared.http.problems import Problem

Proof = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)]
Token = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2048)]


class ConsentIn(BaseModel):
    """A statement of a customer's permission on one channel."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"status": "granted", "source": "pos", "proof": "signature slip 000123"},
                {
                    "status": "granted",
                    "source": "web",
                    "proof": "form signup-v2, ip 203.0.113.7",
                    "double_opt_in": True,
                },
                {"status": "revoked", "source": "import", "changed_at": "2026-03-01T10:00:00Z"},
            ]
        },
    )

    status: ConsentStatus
    source: ClientSource | None = Field(
        default=None, description="Where it was given; default `pos` for POS tokens, else `api`."
    )
    proof: Proof | None = Field(
        default=None, description="Evidence: a signature reference, form id, IP address..."
    )
    changed_at: AwareDatetime | None = Field(
        default=None, description="When the customer said so; default now, never the future."
    )
    double_opt_in: bool = Field(
        default=False,
        description="With `granted`: store `pending` and send the customer a confirmation link.",
    )


class ConsentRecordOut(BaseModel):
    """One statement in the history."""

    id: int
    channel: Channel
    status: ConsentStatus
    source: str
    proof: str | None
    changed_at: datetime
    recorded_at: datetime


class ConsentResult(BaseModel):
    """What a statement did: `changed`, `unchanged`, `stale` (history only), `already_granted`."""

    outcome: Outcome
    detail: str
    consent: ConsentOut | None = Field(description="The current state after the request.")
    record: ConsentRecordOut | None = Field(description="The history entry written, if any.")
    confirmation_requested: bool = False


class ConsentList(BaseModel):
    """Current consents by channel; a channel never asked about is absent (not granted)."""

    contact_id: uuid.UUID
    items: list[ConsentOut]


class ConsentHistoryPage(BaseModel):
    """Statements, newest first; pass `next_cursor` as `cursor` for the next page."""

    items: list[ConsentRecordOut]
    next_cursor: str | None


class ConfirmIn(BaseModel):
    """The token from the confirmation link (it may come in the query instead)."""

    model_config = ConfigDict(extra="forbid")

    token: Token


class LinkResult(BaseModel):
    """The outcome of following a confirmation or unsubscribe link."""

    channel: Channel
    status: ConsentStatus
    outcome: Outcome
    detail: str


class UnsubscribeLink(BaseModel):
    """A one-click unsubscribe link for messages on one channel, and the mail headers."""

    url: str
    token: str
    expires_at: datetime
    headers: dict[str, str] = Field(
        description="`List-Unsubscribe` and `List-Unsubscribe-Post` for email (RFC 8058)."
    )


_TOKEN_PROBLEMS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Forged, expired or wrong kind of link token"},
    409: {"description": "Customer merged/erased, address changed, or nothing pending"},
}
_ONE_CLICK_BODY = {
    "requestBody": {
        "required": False,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "properties": {"List-Unsubscribe": {"type": "string"}},
                },
                "example": "List-Unsubscribe=One-Click",
            }
        },
    }
}


def routes() -> APIRouter:
    """The consents routes."""
    router = APIRouter(tags=["contacts"])

    @router.get("/consents/confirm", response_class=HTMLResponse, responses=_TOKEN_PROBLEMS)
    async def confirm_page(
        settings: AppSettings, token: Annotated[str, Query(max_length=2048)]
    ) -> HTMLResponse:
        """The page a confirmation link opens: it changes nothing and shows a button."""
        content = consent_tokens.verify(settings, "confirm", token)
        return _page(
            "Confirm your subscription",
            f"Please confirm that we may contact you by {content.channel}.",
            button="Confirm",
        )

    @router.post("/consents/confirm", response_model=LinkResult, responses=_TOKEN_PROBLEMS)
    async def confirm(
        request: Request,
        session: Session,
        settings: AppSettings,
        token: Annotated[str | None, Query(max_length=2048)] = None,
        body: ConfirmIn | None = None,
    ) -> LinkResult | HTMLResponse:
        """Confirm a double opt-in with its signed token (no login); repeating is harmless."""
        content = consent_tokens.verify(settings, "confirm", _one_token(token, body))
        recorded = await consents.confirm(session, settings, content)
        result = LinkResult(
            channel=content.channel,
            status="granted",
            outcome=recorded.decision.outcome,
            detail=f"You will hear from us by {content.channel}. Thank you.",
        )
        return _html_or(request, result, "Subscription confirmed")

    @router.get("/unsubscribe", response_class=HTMLResponse, responses=_TOKEN_PROBLEMS)
    async def unsubscribe_page(
        settings: AppSettings, token: Annotated[str, Query(max_length=2048)]
    ) -> HTMLResponse:
        """The page an unsubscribe link opens in a browser: it changes nothing, shows a button."""
        content = consent_tokens.verify(settings, "unsubscribe", token)
        return _page(
            "Unsubscribe",
            f"Stop all marketing messages to you by {content.channel}?",
            button="Unsubscribe",
            one_click=True,
        )

    @router.post(
        "/unsubscribe",
        response_model=LinkResult,
        responses=_TOKEN_PROBLEMS,
        openapi_extra=_ONE_CLICK_BODY,
    )
    async def unsubscribe(
        request: Request,
        session: Session,
        settings: AppSettings,
        token: Annotated[str, Query(max_length=2048)],
    ) -> LinkResult | HTMLResponse:
        """One-click unsubscribe (RFC 8058) with a signed token; no login, idempotent."""
        # The body (`List-Unsubscribe=One-Click`, urlencoded or multipart) only says "one
        # click"; the signed token is what authorises, so the body is neither required nor read.
        content = consent_tokens.verify(settings, "unsubscribe", token)
        recorded = await consents.unsubscribe(session, settings, content)
        result = LinkResult(
            channel=content.channel,
            status="revoked",
            outcome=recorded.decision.outcome if recorded else "unchanged",
            detail=f"You will no longer receive marketing messages by {content.channel}.",
        )
        return _html_or(request, result, "Unsubscribed")

    @router.get("/{contact_id}/consents")
    async def list_consents(contact_id: uuid.UUID, session: Session, _: ReadAuth) -> ConsentList:
        """A customer's current consent per channel."""
        contact = await repository.get(session, contact_id)
        if contact is None:
            raise errors.not_found(contact_id)
        rows = await repository.consents_of(session, [contact_id])
        order: dict[str, int] = {channel: n for n, channel in enumerate(consents.CHANNELS)}
        rows.sort(key=lambda row: order.get(row.channel, len(order)))
        return ConsentList(contact_id=contact_id, items=[_consent_out(row) for row in rows])

    @router.get("/{contact_id}/consents/history")
    async def consent_history(
        contact_id: uuid.UUID,
        session: Session,
        _: ReadAuth,
        channel: Channel | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
    ) -> ConsentHistoryPage:
        """Every consent statement of a customer, newest first (stale ones too); paginated."""
        if await repository.get(session, contact_id) is None:
            raise errors.not_found(contact_id)
        try:
            rows, next_cursor = await consents.history(
                session, contact_id, channel=channel, limit=limit, cursor=cursor
            )
        except ValueError as exc:
            raise errors.invalid("query.cursor", "not a cursor this API made") from exc
        return ConsentHistoryPage(items=[_record_out(r) for r in rows], next_cursor=next_cursor)

    @router.put(
        "/{contact_id}/consents/{channel}",
        responses={
            403: {"description": "A POS token recording a source other than `pos`"},
            404: {"description": "No such customer"},
            409: {"description": "The customer was merged or erased"},
        },
    )
    async def put_consent(
        contact_id: uuid.UUID,
        channel: Channel,
        body: ConsentIn,
        session: Session,
        settings: AppSettings,
        principal: PosAuth,
    ) -> ConsentResult:
        """Record a consent statement: always kept in the history, current unless older."""
        now = datetime.now(UTC)
        change = ConsentChange(
            channel=channel,
            status=body.status,
            source=_source_for(principal, body.source),
            proof=body.proof or None,
            changed_at=consents.effective_time(body.changed_at, now),
            double_opt_in=body.double_opt_in,
        )
        contact = await consents.load_contact(session, contact_id)
        recorded = await consents.record(session, settings, contact, change, now=now)
        return _result(recorded, change)

    @router.get(
        "/{contact_id}/consents/{channel}/unsubscribe-link",
        responses={404: {"description": "No such customer"}, 409: {"description": "Merged"}},
    )
    async def unsubscribe_link(
        contact_id: uuid.UUID,
        channel: Channel,
        session: Session,
        settings: AppSettings,
        _: AdminAuth,
    ) -> UnsubscribeLink:
        """Mint a signed one-click unsubscribe link for messages to a customer on a channel."""
        contact = await repository.get(session, contact_id)
        if contact is None:
            raise errors.not_found(contact_id)
        if contact.status != "active":
            raise errors.gone(contact.id, contact.status, contact.merged_into)
        token, content = consent_tokens.issue(settings, "unsubscribe", contact_id, channel)
        url = consent_tokens.unsubscribe_url(settings, token)
        return UnsubscribeLink(
            url=url,
            token=token,
            expires_at=content.expires_at,
            headers={
                "List-Unsubscribe": f"<{url}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            },
        )

    return router


def _source_for(principal: Principal, source: ClientSource | None) -> ClientSource:
    """POS tokens record what the customer said at the till, nothing else."""
    if principal.has(Scope.ADMIN):
        return source or "api"
    if source not in (None, "pos"):
        raise Problem(
            403,
            "source-not-allowed",
            "Source not allowed",
            f"A POS token records consent given at the till (`pos`), not `{source}`.",
        )
    return "pos"


def _one_token(query: str | None, body: ConfirmIn | None) -> str:
    given = {t for t in (query, body.token if body else None) if t}
    if len(given) != 1:
        raise errors.invalid("token", "give the token once, in the query or the body")
    return given.pop()


def _consent_out(row: Consent) -> ConsentOut:
    return ConsentOut.model_validate(row, from_attributes=True)


def _record_out(row: ConsentRecord) -> ConsentRecordOut:
    return ConsentRecordOut.model_validate(row, from_attributes=True)


def _result(recorded: Recorded, change: ConsentChange) -> ConsentResult:
    decision, current = recorded.decision, recorded.current
    channel = change.channel
    if decision.outcome == "stale" and current is not None:
        detail = (
            f"This statement ({change.changed_at.isoformat()}) is older than the current one "
            f"({current.changed_at.isoformat()}): it is kept in the history, and the {channel} "
            f"consent stays {current.status}."
        )
    elif decision.outcome == "already_granted":
        detail = f"The {channel} consent is already granted: no confirmation needed, nothing kept."
    elif decision.outcome == "unchanged":
        detail = f"The {channel} consent was already {decision.status}; kept in the history."
    else:
        detail = f"The {channel} consent is now {decision.status}."
    if decision.request_confirmation:
        detail += " A confirmation was sent; it stays pending until the customer confirms."
    return ConsentResult(
        outcome=decision.outcome,
        detail=detail,
        consent=_consent_out(current) if current is not None else None,
        record=_record_out(recorded.record) if recorded.record is not None else None,
        confirmation_requested=decision.request_confirmation,
    )


def _html_or(request: Request, result: LinkResult, title: str) -> LinkResult | HTMLResponse:
    """A page for a person who pressed the button in a browser, JSON for everyone else."""
    if "text/html" in request.headers.get("accept", ""):
        return _page(title, result.detail)
    return result


def _page(
    title: str, message: str, *, button: str | None = None, one_click: bool = False
) -> HTMLResponse:
    # The form posts back to the same URL (token in the query): the POST is what acts.
    form = ""
    if button:
        field = (
            '<input type="hidden" name="List-Unsubscribe" value="One-Click">' if one_click else ""
        )
        submit = f'<button type="submit">{html.escape(button)}</button>'
        form = f'<form method="post">{field}{submit}</form>'
    return HTMLResponse(
        '<!doctype html><html><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1>"
        f"<p>{html.escape(message)}</p>{form}</body></html>"
    )
