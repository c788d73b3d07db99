"""Routes of surveys: define them, answer them through a signed link, read the results.

The answer routes take no login: the `token` of the link a message carried is the proof
(see `services.messaging.surveys`). Everything else needs a bearer token.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession

from services.messaging import surveys
from services.messaging.models import SCHEMA
from shared.auth import AdminAuth, ReadAuth
from shared.http.app import AppSettings, session_dependency
from shared.http.problems import Problem, validation_problem

Session = Annotated[AsyncSession, session_dependency(SCHEMA)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]
QuestionId = Annotated[str, StringConstraints(pattern="^[a-z][a-z0-9_]{0,39}$")]
Token = Annotated[str, Query(min_length=1, max_length=2000, description="From the link.")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Question(Strict):
    """`nps` is 0-10 (the survey's score), `scale` 1-5, `text` free text."""

    id: QuestionId
    text: Text
    type: Literal["nps", "scale", "text"]
    required: bool = False


class SurveyIn(Strict):
    """A survey; without `questions`, the seed questions of its kind."""

    name: Text = Field(examples=["After your visit"])
    kind: Literal["nps", "relationship"]
    questions: list[Question] | None = Field(default=None, min_length=1, max_length=20)


class SurveyOut(BaseModel):
    id: uuid.UUID
    name: str
    kind: str
    questions: list[dict[str, Any]]
    created_at: datetime


class AnswerIn(Strict):
    """Answers by question id: numbers for `nps` and `scale`, strings for `text`."""

    answers: dict[str, int | str | None] = Field(
        examples=[{"nps": 9, "comment": "Friendly staff"}], max_length=20
    )


class AnswerOut(BaseModel):
    survey_id: uuid.UUID
    score: int | None
    answers: dict[str, str]
    answered_at: datetime


class AnswerPage(BaseModel):
    """What the link opens: the questions, and the answer if one was already given."""

    survey: SurveyOut
    answer: AnswerOut | None


class ResultRow(BaseModel):
    group: str | None = Field(description="`YYYY-MM`, or a segment name (null: no segment).")
    responses: int
    promoters: int
    passives: int
    detractors: int
    nps: float | None = Field(description="% promoters - % detractors; null without scores.")
    averages: dict[str, float] = Field(description="Mean of each 1-5 question.")


def _survey_out(row: Row[Any]) -> SurveyOut:
    return SurveyOut(
        id=row.id, name=row.name, kind=row.kind, questions=row.questions, created_at=row.created_at
    )


def _answer_out(row: Row[Any]) -> AnswerOut:
    return AnswerOut(
        survey_id=row.survey_id, score=row.score, answers=row.answers, answered_at=row.answered_at
    )


async def _survey(session: AsyncSession, survey_id: uuid.UUID) -> Row[Any]:
    found = await surveys.get(session, survey_id)
    if found is None:
        raise Problem(404, "survey-not-found", "Survey not found", f"No survey {survey_id}.")
    return found


def _link(settings: Any, survey_id: uuid.UUID, token: str) -> surveys.SurveyLink:
    try:
        return surveys.verify_token(settings, survey_id, token)
    except surveys.InvalidLink as exc:
        # 400 like contacts' consent links: a link is not a credential to retry with.
        raise Problem(400, "survey-link-invalid", "Invalid link", str(exc)) from exc


def routes() -> APIRouter:
    """The survey routes."""
    router = APIRouter(tags=["messaging"])

    @router.post("/surveys", status_code=201)
    async def create_survey(
        body: SurveyIn, session: Session, _: AdminAuth, response: Response
    ) -> SurveyOut:
        """Create an NPS or relationship survey."""
        questions = None if body.questions is None else [q.model_dump() for q in body.questions]
        if questions is not None and len({q["id"] for q in questions}) != len(questions):
            raise validation_problem("questions", "question ids must be unique")
        try:
            row = await surveys.create(
                session, name=body.name, kind=body.kind, questions=questions, now=datetime.now(UTC)
            )
        except surveys.InvalidAnswer as exc:
            raise validation_problem(exc.field, str(exc)) from exc
        response.headers["Location"] = f"/v1/messaging/surveys/{row.id}"
        return _survey_out(row)

    @router.get("/surveys")
    async def list_surveys(
        session: Session,
        _: ReadAuth,
        after: Annotated[uuid.UUID | None, Query(description="Cursor: the last id seen")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> list[SurveyOut]:
        """Surveys by id; page on with `after` = the last id of the previous page."""
        return [_survey_out(row) for row in await surveys.list_all(session, after, limit)]

    @router.get("/surveys/{survey_id}")
    async def get_survey(survey_id: uuid.UUID, session: Session, _: ReadAuth) -> SurveyOut:
        """One survey."""
        return _survey_out(await _survey(session, survey_id))

    @router.get("/surveys/{survey_id}/answer")
    async def open_link(
        survey_id: uuid.UUID, token: Token, session: Session, settings: AppSettings
    ) -> AnswerPage:
        """What a survey link shows: the questions, and the answer already given (no login)."""
        survey = await _survey(session, survey_id)
        link = _link(settings, survey_id, token)
        given = await surveys.response_of(session, link)
        return AnswerPage(
            survey=_survey_out(survey), answer=None if given is None else _answer_out(given)
        )

    @router.post("/surveys/{survey_id}/answer", status_code=201)
    async def answer(
        survey_id: uuid.UUID,
        token: Token,
        body: AnswerIn,
        session: Session,
        settings: AppSettings,
        response: Response,
    ) -> AnswerOut:
        """Answer through a survey link (no login); once per link, repeats answer 200."""
        survey = await _survey(session, survey_id)
        link = _link(settings, survey_id, token)
        try:
            row, new = await surveys.answer(session, survey, link, body.answers, datetime.now(UTC))
        except surveys.InvalidAnswer as exc:
            raise validation_problem(exc.field, str(exc)) from exc
        if not new:
            _, cleaned = surveys.check_answers(survey.questions, body.answers)
            if cleaned != row.answers:
                raise Problem(
                    409,
                    "survey-already-answered",
                    "Already answered",
                    "This link was already used with other answers.",
                )
            response.status_code = 200
        return _answer_out(row)

    @router.get("/surveys/{survey_id}/results")
    async def results(
        survey_id: uuid.UUID,
        session: Session,
        settings: AppSettings,
        _: ReadAuth,
        by: Literal["month", "segment"] = "month",
    ) -> list[ResultRow]:
        """NPS with its counts and question averages, per month (business zone) or segment."""
        await _survey(session, survey_id)
        found = await surveys.results(session, survey_id, by, settings.messaging_time_zone)
        return [ResultRow.model_validate(row) for row in found]

    return router
