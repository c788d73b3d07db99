"""Surveys: NPS and short relationship surveys, answered through signed links.

* A survey link carries a JWT over (survey, customer, send), signed with the deployment's
  key (`shared.auth.signing_key`) under its own audience, so it is neither a bearer token
  nor a consent link, and it names exactly one message: answering needs no login.
* One answer per (survey, customer, send): the second submission of a link changes
  nothing and publishes nothing (the unique key on `survey_responses` decides).
* Results: NPS = % promoters (9-10) - % detractors (0-6), with the counts behind it, per
  month in the business zone or per segment; relationship questions are averaged.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import jwt
from sqlalchemy import Row, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.messaging.models import SCHEMA, segment_members, sends, survey_responses, surveys
from shared.auth import key_ring
from shared.events.messaging import SurveyAnswered
from shared.pipeline.outbox import add_event
from shared.settings import Settings

AUDIENCE = "crm:survey"
LINK_TTL = timedelta(days=90)
"""Long enough for a customer to answer late, short enough that old links die."""

NPS_QUESTIONS: list[dict[str, Any]] = [
    {
        "id": "nps",
        "text": "How likely are you to recommend us to a friend?",
        "type": "nps",
        "required": True,
    },
    {"id": "comment", "text": "What is the main reason for your score?", "type": "text"},
]
RELATIONSHIP_QUESTIONS: list[dict[str, Any]] = [
    {"id": "understand_needs", "text": "We understand your needs.", "type": "scale"},
    {"id": "satisfaction", "text": "How satisfied are you with us?", "type": "scale"},
    {"id": "communication", "text": "How well do we keep in touch?", "type": "scale"},
    {"id": "comment", "text": "Anything we could do better?", "type": "text"},
]
SCALE = (1, 5)


class InvalidLink(Exception):
    """The survey token is forged, expired or for another survey."""


class InvalidAnswer(ValueError):
    """An answer does not fit the survey; `field` names the place."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class SurveyLink:
    survey_id: uuid.UUID
    customer_id: uuid.UUID
    send_id: uuid.UUID


def issue_token(settings: Settings, link: SurveyLink, now: datetime) -> str:
    """A signed token naming one survey message."""
    claims = {
        "iss": settings.jwt_issuer,
        "aud": AUDIENCE,
        "sub": str(link.customer_id),
        "svy": str(link.survey_id),
        "snd": str(link.send_id),
        "iat": int(now.timestamp()),
        "exp": int((now + LINK_TTL).timestamp()),
    }
    return key_ring(settings).encode(claims)


def verify_token(settings: Settings, survey_id: uuid.UUID, token: str) -> SurveyLink:
    """What a valid token for `survey_id` names; `InvalidLink` otherwise."""
    try:
        claims = key_ring(settings).decode(
            token,
            audience=AUDIENCE,
            issuer=settings.jwt_issuer,
            options={"require": ["exp", "sub", "aud", "iss", "svy", "snd"]},
        )
        link = SurveyLink(
            uuid.UUID(str(claims["svy"])),
            uuid.UUID(str(claims["sub"])),
            uuid.UUID(str(claims["snd"])),
        )
    except jwt.ExpiredSignatureError as exc:
        raise InvalidLink("This survey link has expired.") from exc
    except (jwt.PyJWTError, ValueError) as exc:
        raise InvalidLink(f"This is not a valid survey link ({exc}).") from exc
    if link.survey_id != survey_id:
        raise InvalidLink("This link belongs to another survey.")
    return link


def answer_url(settings: Settings, link: SurveyLink, now: datetime) -> str:
    """The public link a message carries (`survey_url` in the send's payload)."""
    token = issue_token(settings, link, now)
    base = settings.public_base_url.rstrip("/")
    return f"{base}/v1/messaging/surveys/{link.survey_id}/answer?{urlencode({'token': token})}"


async def attach_link(
    session: AsyncSession,
    settings: Settings,
    survey_id: uuid.UUID,
    customer_id: uuid.UUID,
    send_id: uuid.UUID,
) -> None:
    """Add `survey_url` to a queued send's payload (the token needs the send's id)."""
    url = answer_url(settings, SurveyLink(survey_id, customer_id, send_id), datetime.now(UTC))
    payload = (
        await session.execute(select(sends.c.payload).where(sends.c.id == send_id))
    ).scalar_one()
    # `sends.enqueue` keeps the caller's part of the payload under "data".
    stored = dict(payload or {})
    stored["data"] = dict(stored.get("data") or {}) | {
        "survey_url": url,
        "survey_id": str(survey_id),
    }
    await session.execute(update(sends).where(sends.c.id == send_id).values(payload=stored))


async def create(
    session: AsyncSession,
    *,
    name: str,
    kind: str,
    questions: list[dict[str, Any]] | None,
    now: datetime,
) -> Row[Any]:
    """A new survey; without questions, the seed set of its kind."""
    if questions is None:
        questions = NPS_QUESTIONS if kind == "nps" else RELATIONSHIP_QUESTIONS
    if kind == "nps" and not any(q["type"] == "nps" for q in questions):
        raise InvalidAnswer("questions", "an NPS survey needs a question of type nps")
    row = (
        await session.execute(
            surveys.insert()
            .values(id=uuid.uuid4(), name=name, kind=kind, questions=questions, created_at=now)
            .returning(*surveys.c)
        )
    ).one()
    return row


async def get(session: AsyncSession, survey_id: uuid.UUID) -> Row[Any] | None:
    """One survey."""
    return (await session.execute(select(surveys).where(surveys.c.id == survey_id))).one_or_none()


async def list_all(
    session: AsyncSession, after: uuid.UUID | None, limit: int
) -> Sequence[Row[Any]]:
    """Surveys by id, from the cursor on."""
    statement = select(surveys).order_by(surveys.c.id).limit(limit)
    if after is not None:
        statement = statement.where(surveys.c.id > after)
    return (await session.execute(statement)).all()


async def response_of(session: AsyncSession, link: SurveyLink) -> Row[Any] | None:
    """The answer already given through this link, if any."""
    return (
        await session.execute(
            select(survey_responses).where(
                survey_responses.c.survey_id == link.survey_id,
                survey_responses.c.customer_id == link.customer_id,
                survey_responses.c.send_id == link.send_id,
            )
        )
    ).one_or_none()


def check_answers(
    questions: Sequence[Mapping[str, Any]], answers: Mapping[str, Any]
) -> tuple[int | None, dict[str, str]]:
    """The score (the NPS question's answer) and the answers as text; `InvalidAnswer` if wrong."""
    known = {str(q["id"]): q for q in questions}
    for key in answers:
        if key not in known:
            raise InvalidAnswer(f"answers.{key}", "not a question of this survey")
    score: int | None = None
    cleaned: dict[str, str] = {}
    for key, question in known.items():
        value = answers.get(key)
        if value is None or value == "":
            if question.get("required"):
                raise InvalidAnswer(f"answers.{key}", "an answer is required")
            continue
        kind = question.get("type")
        if kind in ("nps", "scale"):
            low, high = (0, 10) if kind == "nps" else SCALE
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise InvalidAnswer(f"answers.{key}", f"a whole number from {low} to {high}")
            if kind == "nps":
                score = value
        elif not isinstance(value, str) or len(value) > 2000:
            raise InvalidAnswer(f"answers.{key}", "text of at most 2000 characters")
        cleaned[key] = str(value)
    return score, cleaned


async def answer(
    session: AsyncSession,
    survey: Row[Any],
    link: SurveyLink,
    answers: Mapping[str, Any],
    now: datetime,
) -> tuple[Row[Any], bool]:
    """Record the answer once; (the response, whether it is new). New answers publish."""
    score, cleaned = check_answers(survey.questions, answers)
    inserted = (
        await session.execute(
            insert(survey_responses)
            .values(
                id=uuid.uuid4(),
                survey_id=link.survey_id,
                customer_id=link.customer_id,
                send_id=link.send_id,
                score=score,
                answers=cleaned,
                answered_at=now,
            )
            .on_conflict_do_nothing(constraint="uq_survey_responses")
            .returning(*survey_responses.c)
        )
    ).one_or_none()
    if inserted is None:
        existing = await response_of(session, link)
        assert existing is not None  # the conflict was with this very row
        return existing, False
    await add_event(
        session,
        SCHEMA,
        SurveyAnswered(
            survey_id=link.survey_id,
            customer_id=link.customer_id,
            kind=survey.kind,
            score=score,
            answers=cleaned,
            answered_at=now,
        ),
        source=SCHEMA,
    )
    return inserted, True


def summarise(scores: Iterable[int | None], answers: Iterable[Mapping[str, str]]) -> dict[str, Any]:
    """Counts, NPS (when there are scores) and the mean of each scale question."""
    responses = 0
    promoters = passives = detractors = 0
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for score, given in zip(scores, answers, strict=True):
        responses += 1
        if score is not None:
            if score >= 9:
                promoters += 1
            elif score >= 7:
                passives += 1
            else:
                detractors += 1
        for key, value in given.items():
            if key != "nps" and value.isdigit():
                sums[key] = sums.get(key, 0.0) + int(value)
                counts[key] = counts.get(key, 0) + 1
    scored = promoters + passives + detractors
    nps = round(100.0 * (promoters - detractors) / scored, 1) if scored else None
    return {
        "responses": responses,
        "promoters": promoters,
        "passives": passives,
        "detractors": detractors,
        "nps": nps,
        "averages": {key: round(sums[key] / counts[key], 2) for key in sorted(sums)},
    }


async def results(
    session: AsyncSession, survey_id: uuid.UUID, by: str, time_zone: str
) -> list[dict[str, Any]]:
    """Summaries grouped by month (in `time_zone`) or by segment (a customer in no segment
    counts under `null`; one in several segments counts in each)."""
    if by == "month":
        group = func.to_char(
            func.timezone(time_zone, survey_responses.c.answered_at), "YYYY-MM"
        ).label("group")
        statement = select(group, survey_responses.c.score, survey_responses.c.answers)
    else:
        group = segment_members.c.segment_name.label("group")
        statement = select(group, survey_responses.c.score, survey_responses.c.answers).outerjoin(
            segment_members, segment_members.c.customer_id == survey_responses.c.customer_id
        )
    rows = (
        await session.execute(
            statement.where(survey_responses.c.survey_id == survey_id).order_by(group)
        )
    ).all()
    grouped: dict[str | None, list[Any]] = {}
    for row in rows:
        grouped.setdefault(row.group, []).append(row)
    return [
        {"group": key} | summarise((r.score for r in members), (r.answers or {} for r in members))
        for key, members in grouped.items()
    ]
