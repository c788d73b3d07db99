"""Routes of saved segments and their members; mounted by `services.scoring.api`.

A rule that does not parse, names an unknown attribute or compares an attribute with a
value of the wrong type is a 422 whose error names the character position at fault, and
nothing is saved. Saving a segment or changing its rule evaluates it over every customer
at once (see `services.scoring.segments`), so the answer already counts its members.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy.ext.asyncio import AsyncSession

from services.scoring import segment_rules, segments
from services.scoring.models import SCHEMA
from shared.auth import AdminAuth, ReadAuth
from shared.http.app import session_dependency
from shared.http.problems import Problem, validation_problem

Session = Annotated[AsyncSession, session_dependency(SCHEMA)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Description = Annotated[str, StringConstraints(strip_whitespace=True, max_length=1000)]
# Not stripped: the positions in rule errors count from the first character sent.
RuleText = Annotated[str, StringConstraints(min_length=1, max_length=segment_rules.MAX_RULE_LENGTH)]
Cursor = Annotated[str | None, Query(max_length=300, description="`next_cursor` of a page")]


class SegmentIn(BaseModel):
    """A segment: a name and a rule over the attributes listed at `/segments/attributes`."""

    model_config = ConfigDict(extra="forbid")

    name: Name = Field(examples=["Slipping VIPs"])
    rule: RuleText = Field(
        examples=['churn_risk >= 0.6 and clv >= 500 and tier in ["gold", "platinum"]']
    )
    description: Description | None = Field(default=None, examples=["Win-back candidates."])


class SegmentOut(BaseModel):
    id: uuid.UUID
    name: str
    rule: str
    description: str | None
    members: int = Field(description="Customers in the segment now.")
    created_at: datetime
    updated_at: datetime


class SegmentPage(BaseModel):
    """Segments by name; pass `next_cursor` as `cursor` for the next page."""

    items: list[SegmentOut]
    next_cursor: str | None


class MemberOut(BaseModel):
    customer_id: uuid.UUID
    entered_at: datetime


class MemberPage(BaseModel):
    """Members by customer id; pass `next_cursor` as `cursor` for the next page."""

    items: list[MemberOut]
    next_cursor: str | None


class AttributeOut(BaseModel):
    name: str = Field(examples=["churn_risk"])
    type: segment_rules.Kind = Field(examples=["number"])


def _out(segment: segments.Segment) -> SegmentOut:
    return SegmentOut(
        id=segment.id,
        name=segment.name,
        rule=segment.rule,
        description=segment.description,
        members=segment.members,
        created_at=segment.created_at,
        updated_at=segment.updated_at,
    )


def _encode(*parts: str) -> str:
    raw = "\x1f".join(parts).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str, count: int) -> list[str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise _bad_cursor() from exc
    parts = raw.split("\x1f")
    if len(parts) != count:
        raise _bad_cursor()
    return parts


def _bad_cursor() -> Problem:
    return validation_problem("query.cursor", "not a cursor this API made")


def _uuid(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError as exc:
        raise _bad_cursor() from exc


def _checked(rule: str) -> str:
    """`rule`, or a 422 naming the kind of error and its position."""
    try:
        segment_rules.parse(rule)
    except segment_rules.RuleError as exc:
        raise Problem(
            422,
            "validation-error",
            "Validation error",
            f"The rule is not valid: {exc.message} at position {exc.position}.",
            errors=[
                {
                    "field": "body.rule",
                    "message": exc.message,
                    "type": exc.kind,
                    "position": exc.position,
                }
            ],
        ) from exc
    return rule


def _not_found(segment_id: uuid.UUID) -> Problem:
    return Problem(404, "segment-not-found", "Segment not found", f"No segment {segment_id}.")


def _name_taken(name: str) -> Problem:
    return Problem(
        409, "segment-name-taken", "Segment name taken", f"A segment named {name!r} exists."
    )


def routes() -> APIRouter:
    """The segment routes."""
    router = APIRouter(tags=["scoring"])

    @router.get("/segments/attributes")
    async def attributes(_: ReadAuth) -> list[AttributeOut]:
        """The attributes a segment rule may name, with their types."""
        return [
            AttributeOut(name=name, type=kind) for name, kind in segment_rules.ATTRIBUTES.items()
        ]

    @router.post("/segments", status_code=201)
    async def create_segment(
        body: SegmentIn, session: Session, _: AdminAuth, response: Response
    ) -> SegmentOut:
        """Save a segment and fill it with the customers its rule matches now."""
        try:
            segment = await segments.create_segment(
                session,
                name=body.name,
                rule=_checked(body.rule),
                description=body.description,
                now=datetime.now(UTC),
            )
        except segments.NameTaken as exc:
            raise _name_taken(body.name) from exc
        response.headers["Location"] = f"/v1/scoring/segments/{segment.id}"
        return _out(segment)

    @router.get("/segments")
    async def list_segments(
        session: Session,
        _: ReadAuth,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: Cursor = None,
    ) -> SegmentPage:
        """Saved segments by name, with their member counts."""
        after = None
        if cursor:
            name, segment_id = _decode(cursor, 2)
            after = (name, _uuid(segment_id))
        found = await segments.list_segments(session, after=after, limit=limit + 1)
        page = found[:limit]
        more = len(found) > limit
        return SegmentPage(
            items=[_out(segment) for segment in page],
            next_cursor=_encode(page[-1].name, str(page[-1].id)) if more else None,
        )

    @router.get("/segments/{segment_id:uuid}")
    async def get_segment(segment_id: uuid.UUID, session: Session, _: ReadAuth) -> SegmentOut:
        """One segment with its member count."""
        segment = await segments.get_segment(session, segment_id)
        if segment is None:
            raise _not_found(segment_id)
        return _out(segment)

    @router.put("/segments/{segment_id:uuid}")
    async def replace_segment(
        segment_id: uuid.UUID, body: SegmentIn, session: Session, _: AdminAuth
    ) -> SegmentOut:
        """Replace a segment; a changed rule re-evaluates it, with entry and exit events."""
        try:
            segment = await segments.update_segment(
                session,
                segment_id,
                name=body.name,
                rule=_checked(body.rule),
                description=body.description,
                now=datetime.now(UTC),
            )
        except segments.NameTaken as exc:
            raise _name_taken(body.name) from exc
        if segment is None:
            raise _not_found(segment_id)
        return _out(segment)

    @router.delete("/segments/{segment_id:uuid}", status_code=204)
    async def delete_segment(segment_id: uuid.UUID, session: Session, _: AdminAuth) -> Response:
        """Delete a segment; each member gets a `segment.exited` event."""
        if not await segments.delete_segment(session, segment_id, now=datetime.now(UTC)):
            raise _not_found(segment_id)
        return Response(status_code=204)

    @router.get("/segments/{segment_id:uuid}/members")
    async def list_members(
        segment_id: uuid.UUID,
        session: Session,
        _: ReadAuth,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Cursor = None,
    ) -> MemberPage:
        """A segment's members, by customer id; page on with `cursor`."""
        if not await segments.segment_exists(session, segment_id):
            raise _not_found(segment_id)
        after = _uuid(_decode(cursor, 1)[0]) if cursor else None
        found = await segments.list_members(session, segment_id, after=after, limit=limit + 1)
        page = found[:limit]
        return MemberPage(
            items=[MemberOut(customer_id=m.customer_id, entered_at=m.entered_at) for m in page],
            next_cursor=_encode(str(page[-1].customer_id)) if len(found) > limit else None,
        )

    return router
