"""Surveys: NPS arithmetic, signed links answered once, results per month and segment."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text

from services.messaging import surveys
from services.messaging.models import segment_members, survey_responses
from shared.settings import Settings
from tests.services.messaging.test_triggers import Sessions

SURVEYS = "/v1/messaging/surveys"


def test_nps_is_promoters_minus_detractors() -> None:
    scores = [10, 9, 9, 8, 7, 6, 3, 0, None, 10]
    summary = surveys.summarise(scores, [{} for _ in scores])
    assert (summary["promoters"], summary["passives"], summary["detractors"]) == (4, 2, 3)
    assert summary["responses"] == 10
    assert summary["nps"] == pytest.approx(100 * (4 - 3) / 9, abs=0.05)
    assert surveys.summarise([], [])["nps"] is None


def test_answers_are_checked_against_the_questions() -> None:
    questions = surveys.RELATIONSHIP_QUESTIONS
    score, cleaned = surveys.check_answers(questions, {"satisfaction": 4, "comment": "ok"})
    assert (score, cleaned) == (None, {"satisfaction": "4", "comment": "ok"})
    for bad in ({"satisfaction": 6}, {"colour": "red"}, {"satisfaction": True}):
        with pytest.raises(surveys.InvalidAnswer):
            surveys.check_answers(questions, bad)
    with pytest.raises(surveys.InvalidAnswer):
        surveys.check_answers(surveys.NPS_QUESTIONS, {"comment": "no score"})


async def create(client: httpx.AsyncClient, admin: dict[str, str], **body: Any) -> str:
    response = await client.post(SURVEYS, json={"name": "Visit"} | body, headers=admin)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def token_for(settings: Settings, survey_id: str, customer: uuid.UUID | None = None) -> str:
    link = surveys.SurveyLink(uuid.UUID(survey_id), customer or uuid.uuid4(), uuid.uuid4())
    return surveys.issue_token(settings, link, datetime.now(UTC))


async def answered_events(sessions: Sessions) -> list[dict[str, Any]]:
    async with sessions() as session:
        rows = await session.execute(
            text("SELECT payload FROM messaging.outbox WHERE event_type = 'survey.answered'")
        )
        return [json.loads(payload)["data"] for (payload,) in rows]


async def test_seed_surveys_and_validation(
    client: httpx.AsyncClient, admin: dict[str, str], reader: dict[str, str]
) -> None:
    survey_id = await create(client, admin, kind="relationship")
    found = await client.get(f"{SURVEYS}/{survey_id}", headers=reader)
    assert [q["id"] for q in found.json()["questions"]] == [
        "understand_needs",
        "satisfaction",
        "communication",
        "comment",
    ]
    bad = [
        {"name": "x", "kind": "poll"},
        {"name": "x", "kind": "nps", "questions": [{"id": "a", "text": "A", "type": "text"}]},
        {
            "name": "x",
            "kind": "relationship",
            "questions": [
                {"id": "a", "text": "A", "type": "scale"},
                {"id": "a", "text": "B", "type": "text"},
            ],
        },
    ]
    for body in bad:
        response = await client.post(SURVEYS, json=body, headers=admin)
        assert response.status_code == 422, response.text
    assert len((await client.get(SURVEYS, headers=reader)).json()) == 1
    assert (
        await client.post(SURVEYS, json={"name": "x", "kind": "nps"}, headers=reader)
    ).status_code == 403
    assert (await client.get(f"{SURVEYS}/{uuid.uuid4()}", headers=reader)).status_code == 404


async def test_a_link_answers_once_without_login(
    client: httpx.AsyncClient, admin: dict[str, str], sessions: Sessions, settings: Settings
) -> None:
    survey_id = await create(client, admin, kind="nps")
    customer = uuid.uuid4()
    token = token_for(settings, survey_id, customer)
    url = f"{SURVEYS}/{survey_id}/answer"
    opened = await client.get(url, params={"token": token})
    assert opened.status_code == 200
    assert opened.json()["answer"] is None
    invalid = await client.post(url, params={"token": token}, json={"answers": {"nps": 11}})
    assert invalid.status_code == 422
    body = {"answers": {"nps": 9, "comment": "Friendly staff"}}
    first = await client.post(url, params={"token": token}, json=body)
    assert first.status_code == 201, first.text
    assert first.json()["score"] == 9
    again = await client.post(url, params={"token": token}, json=body)
    assert again.status_code == 200
    other = await client.post(url, params={"token": token}, json={"answers": {"nps": 2}})
    assert other.status_code == 409
    assert (await client.get(url, params={"token": token})).json()["answer"]["score"] == 9
    [event] = await answered_events(sessions)
    assert (event["customer_id"], event["score"], event["kind"]) == (str(customer), 9, "nps")
    async with sessions() as session:
        count = (await session.execute(select(func.count()).select_from(survey_responses))).scalar()
    assert count == 1


async def test_forged_expired_or_foreign_links_are_refused(
    client: httpx.AsyncClient, admin: dict[str, str], sessions: Sessions, settings: Settings
) -> None:
    survey_id = await create(client, admin, kind="nps")
    other_survey = await create(client, admin, kind="nps")
    expired = surveys.issue_token(
        settings,
        surveys.SurveyLink(uuid.UUID(survey_id), uuid.uuid4(), uuid.uuid4()),
        datetime(2020, 1, 1, tzinfo=UTC),
    )
    for token in ("not-a-token", token_for(settings, other_survey), expired):
        response = await client.post(
            f"{SURVEYS}/{survey_id}/answer", params={"token": token}, json={"answers": {"nps": 5}}
        )
        assert response.status_code == 400, response.text
        assert response.json()["type"].endswith("survey-link-invalid")
    assert await answered_events(sessions) == []


async def test_results_by_month_and_segment(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    reader: dict[str, str],
    sessions: Sessions,
    settings: Settings,
) -> None:
    survey_id = await create(client, admin, kind="nps")
    vip, regular, loner = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with sessions() as session, session.begin():
        for customer, name in ((vip, "VIP"), (regular, "Regulars")):
            await session.execute(
                segment_members.insert().values(
                    segment_id=uuid.uuid5(uuid.NAMESPACE_DNS, name),
                    customer_id=customer,
                    segment_name=name,
                    entered_at=datetime.now(UTC),
                )
            )
    for customer, score in ((vip, 10), (regular, 3), (loner, 8)):
        response = await client.post(
            f"{SURVEYS}/{survey_id}/answer",
            params={"token": token_for(settings, survey_id, customer)},
            json={"answers": {"nps": score}},
        )
        assert response.status_code == 201
    month = datetime.now(UTC).astimezone().strftime("%Y-%m")
    by_month = await client.get(f"{SURVEYS}/{survey_id}/results", headers=reader)
    [row] = by_month.json()
    assert row["group"][:4] == month[:4]
    assert (row["responses"], row["promoters"], row["passives"], row["detractors"]) == (3, 1, 1, 1)
    assert row["nps"] == 0.0
    by_segment = await client.get(
        f"{SURVEYS}/{survey_id}/results", params={"by": "segment"}, headers=reader
    )
    groups = {r["group"]: (r["responses"], r["nps"]) for r in by_segment.json()}
    assert groups == {"VIP": (1, 100.0), "Regulars": (1, -100.0), None: (1, 0.0)}
    bad = await client.get(f"{SURVEYS}/{survey_id}/results", params={"by": "week"}, headers=reader)
    assert bad.status_code == 422
