"""CSV import and export through the HTTP API, on a real database and real files."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.contacts import SERVICE
from services.contacts.import_lines import Clock, check_batch
from services.contacts.import_resolve import ContactState, resolve
from services.contacts.import_rows import fast_email, fast_phone, read_header
from services.contacts.normalize import (
    InvalidValue,
    luhn_check_digit,
    normalize_email,
    normalize_phone,
)
from shared.auth import Scope
from shared.db.engine import create_engine
from shared.events.contacts import Birthday, CustomerSignedUp, CustomerUpdated, ProfileSnapshot
from shared.events.envelope import EventEnvelope
from shared.http.app import create_app
from shared.settings import Settings
from tests.http.app import client_for
from tests.support.auth import SECRET, auth

CSV_HEADERS = {"Content-Type": "text/csv"}


class ImportSettings(Settings):
    """Settings with the import knobs `ImportLimits.from_settings` reads when declared."""

    contacts_import_max_rows: int = 10_000
    contacts_import_max_bytes: int = 1 << 30
    contacts_import_batch_size: int = 5_000
    contacts_import_workers: int = 1
    contacts_import_process_threshold: int = 20_000


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return ImportSettings(
        database_url=database_url,
        jwt_secret=SECRET,
        contacts_default_region="MY",
        data_dir=tmp_path,
    )


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=1)
    yield engine
    await engine.dispose()


def card(body: str) -> str:
    return body + luhn_check_digit(body)


def table(*rows: list[str] | tuple[str, ...]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue().encode()


async def upload(
    client: httpx.AsyncClient, headers: dict[str, str], body: bytes, **params: str
) -> httpx.Response:
    return await client.post(
        "/v1/contacts/imports", content=body, headers={**headers, **CSV_HEADERS}, params=params
    )


async def finished(
    client: httpx.AsyncClient, headers: dict[str, str], job: httpx.Response | str
) -> dict[str, Any]:
    """Poll the job (an upload's 202 response, or its URL) until it is done."""
    if isinstance(job, httpx.Response):
        assert job.status_code == 202, job.text
        location = job.headers["location"]
    else:
        location = job
    for _ in range(600):
        state: dict[str, Any] = (await client.get(location, headers=headers)).json()
        if state["status"] != "running":
            return state
        await asyncio.sleep(0.05)
    raise AssertionError(f"import still running: {state}")


async def imported(
    client: httpx.AsyncClient, headers: dict[str, str], body: bytes
) -> dict[str, Any]:
    return await finished(client, headers, await upload(client, headers, body))


async def errors_of(
    client: httpx.AsyncClient, headers: dict[str, str], job: dict[str, Any]
) -> dict[int, str]:
    page = (await client.get(job["errors_url"], params={"limit": 1000}, headers=headers)).json()
    return {item["line"]: item["reason"] for item in page["items"]}


async def lookup(client: httpx.AsyncClient, headers: dict[str, str], **query: str) -> Any:
    response = await client.get("/v1/contacts/lookup", params=query, headers=headers)
    return response.json() if response.status_code == 200 else None


async def outbox(engine: AsyncEngine) -> list[EventEnvelope]:
    async with engine.connect() as connection:
        rows = await connection.execute(text("SELECT payload FROM contacts.outbox ORDER BY id"))
        return [EventEnvelope.model_validate_json(row.payload) for row in rows]


async def test_rows_go_in_and_bad_lines_are_reported(
    client: httpx.AsyncClient, admin: dict[str, str], pos: dict[str, str]
) -> None:
    body = table(
        ["Given_Name", "family_name", "email", "phone", "birthday", "tags", "attr:drink"],
        ["Aisyah", "Rahman", "Aisyah@Example.MY", "012-345 6789", "03-14", "VIP; coffee", "teh"],
        ["Bad", "Email", "not-an-email", "", "", "", ""],
        ["Somchai", "", "", "+60 19-876 5432", "1988-07-02", "", ""],
        ["Wrong", "Date", "wd@example.my", "", "1990-02-30", "", ""],
        ["Nobody", "", "", "", "", "", ""],
        ["Short", "row"],
        ["Two\nlines", "Back\\slash\tTab", "ml@example.my", "", "", "", "\\N"],  # lines 8-9
        [],  # a blank line is not a row
        ["After", "", "after@", "", "", "", ""],
    )
    response = await upload(client, admin, body, filename="fair.csv")
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/v1/contacts/imports/{response.json()['id']}"
    assert response.json()["rows_total"] == 8
    job = await finished(client, admin, response)
    assert job["status"] == "completed", job
    assert job["filename"] == "fair.csv"
    assert (job["rows_seen"], job["rows_created"], job["rows_failed"]) == (8, 3, 5)
    assert job["finished_at"] is not None
    reasons = await errors_of(client, admin, job)
    assert sorted(reasons) == [3, 5, 6, 7, 11]
    assert reasons[3].startswith("email: ")
    assert reasons[5] == "birthday: 1990-02-30 is not a date"
    assert reasons[6] == "needs at least one of email, phone or card_number"
    assert "expected 7 fields" in reasons[7]

    aisyah = await lookup(client, pos, email="aisyah@example.my")
    assert aisyah["phone"] == "+60123456789"
    assert aisyah["tags"] == ["coffee", "vip"]
    assert aisyah["birthday"] == {"month": 3, "day": 14, "year": None}
    assert aisyah["attributes"] == {"drink": "teh"}
    assert aisyah["signup_source"] == "import"
    assert aisyah["card_number"].startswith("88"), "a card is generated, as at signup"
    multi = await lookup(client, pos, email="ml@example.my")
    assert (multi["given_name"], multi["family_name"]) == ("Two\nlines", "Back\\slash\tTab")
    assert multi["attributes"] == {"drink": "\\N"}
    somchai = await lookup(client, pos, phone="0198765432")
    assert somchai["given_name"] == "Somchai" and somchai["family_name"] is None
    assert somchai["birthday"] == {"month": 7, "day": 2, "year": 1988}


async def test_rows_update_existing_customers_by_each_identifier(
    client: httpx.AsyncClient, admin: dict[str, str], pos: dict[str, str]
) -> None:
    people = [
        {"email": "one@example.my", "given_name": "One"},
        {"phone": "0122222222", "given_name": "Two"},
        {"card_number": card("88000000333"), "given_name": "Three"},
    ]
    ids = []
    for person in people:
        created = await client.post("/v1/contacts", json=person, headers=pos)
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])
    body = table(
        ["email", "phone", "card_number", "given_name", "locale", "tags", "store_id"],
        ["ONE@example.my", "", "", "Uno", "", "", "kl-09"],
        ["", "+60122222222", "", "", "ms_my", "", ""],
        ["", "", card("88000000333"), "", "", "gold", ""],
        ["one@example.my", "", "", "Uno", "", "", ""],
    )
    job = await imported(client, admin, body)
    assert (job["rows_created"], job["rows_updated"], job["rows_unchanged"]) == (0, 3, 1)
    one = await lookup(client, pos, email="one@example.my")
    assert (one["id"], one["given_name"], one["signup_store"]) == (ids[0], "Uno", "kl-01")
    two = await lookup(client, pos, phone="0122222222")
    assert (two["id"], two["given_name"], two["locale"]) == (ids[1], "Two", "ms-MY")
    three = await lookup(client, pos, card=card("88000000333"))
    assert (three["id"], three["tags"]) == (ids[2], ["gold"])
    assert three["signup_source"] == "api", "an update keeps how the customer signed up"


async def test_a_row_matching_two_customers_is_refused(
    client: httpx.AsyncClient, admin: dict[str, str], pos: dict[str, str]
) -> None:
    first = (await client.post("/v1/contacts", json={"email": "a@example.my"}, headers=pos)).json()
    second = (await client.post("/v1/contacts", json={"phone": "0123333333"}, headers=pos)).json()
    job = await imported(
        client,
        admin,
        table(["email", "phone", "given_name"], ["a@example.my", "0123333333", "Both"]),
    )
    assert (job["rows_failed"], job["rows_updated"]) == (1, 0)
    reason = (await errors_of(client, admin, job))[2]
    assert "matches different customers" in reason
    assert first["id"] in reason and second["id"] in reason
    assert (await lookup(client, pos, email="a@example.my"))["given_name"] is None


async def test_rows_of_one_customer_within_a_file_apply_in_order(
    client: httpx.AsyncClient, admin: dict[str, str], pos: dict[str, str], engine: AsyncEngine
) -> None:
    x = (
        await client.post(
            "/v1/contacts", json={"email": "x@example.my", "phone": "0121111111"}, headers=pos
        )
    ).json()
    y = (
        await client.post(
            "/v1/contacts", json={"email": "y@example.my", "phone": "0122222222"}, headers=pos
        )
    ).json()
    body = table(
        ["email", "phone", "given_name"],
        ["new@example.my", "0124444444", "First"],  # creates N
        ["new@example.my", "", "Second"],  # updates N
        ["new@example.my", "0124444444", "Second"],  # nothing new: unchanged
        # X and Y swap phones through a third number, all in one batch.
        ["x@example.my", "0123333333", ""],
        ["y@example.my", "0121111111", ""],
        ["x@example.my", "0122222222", ""],
        ["other@example.my", "0123333333", "Other"],  # 0123333333 is free again: creates
    )
    job = await imported(client, admin, body)
    assert (job["rows_created"], job["rows_updated"], job["rows_unchanged"]) == (2, 4, 1)
    assert job["rows_failed"] == 0
    assert (await lookup(client, pos, email="new@example.my"))["given_name"] == "Second"
    assert (await lookup(client, pos, phone="0122222222"))["id"] == x["id"]
    assert (await lookup(client, pos, phone="0121111111"))["id"] == y["id"]
    assert (await lookup(client, pos, phone="0123333333"))["given_name"] == "Other"

    events = await outbox(engine)
    new_id = (await lookup(client, pos, email="new@example.my"))["id"]
    mine = [e for e in events if e.subject == new_id]
    assert [e.type for e in mine] == ["customer.signed_up", "customer.updated"]
    assert mine[0].data["profile"]["given_name"] == "First"
    assert mine[1].data["changed"] == ["given_name"]
    assert mine[0].time < mine[1].time
    x_events = [e for e in events if e.subject == x["id"] and e.type == "customer.updated"]
    assert [e.data["profile"]["phone"] for e in x_events] == ["+60123333333", "+60122222222"]


async def test_events_are_queued_for_created_and_updated_customers(
    client: httpx.AsyncClient, admin: dict[str, str], pos: dict[str, str], engine: AsyncEngine
) -> None:
    existing = (
        await client.post("/v1/contacts", json={"email": "old@example.my"}, headers=pos)
    ).json()
    body = table(
        ["email", "given_name", "tags", "store_id", "birthday"],
        ["old@example.my", "Old", "", "", ""],
        ["fresh@example.my", "Fresh", "b;a", "pj-02", "2001-12-31"],
    )
    job = await imported(client, admin, body)
    assert (job["rows_created"], job["rows_updated"]) == (1, 1)
    events = await outbox(engine)
    assert [e.type for e in events] == [
        "customer.signed_up",  # the signup through the API
        "customer.updated",
        "customer.signed_up",
    ]
    updated = CustomerUpdated.model_validate(events[1].data)
    assert events[1].subject == existing["id"] and events[1].source == "contacts"
    assert updated.changed == ["given_name"]
    assert updated.profile.given_name == "Old"
    signed_up = CustomerSignedUp.model_validate(events[2].data)
    fresh = await lookup(client, pos, email="fresh@example.my")
    assert events[2].subject == fresh["id"] == str(signed_up.customer_id)
    assert signed_up.source == "import" and signed_up.store_id == "pj-02"
    assert signed_up.profile.tags == ["a", "b"]
    assert signed_up.profile.card_number == fresh["card_number"]
    assert signed_up.profile.birthday is not None and signed_up.profile.birthday.year == 2001


def _outbox_fields(line: bytes) -> list[str]:
    # COPY text format; the payload is JSON, whose only special character there is "\\".
    return [field.replace("\\\\", "\\") for field in line.decode().rstrip("\n").split("\t")]


def test_envelopes_are_byte_for_byte_what_pydantic_writes() -> None:
    columns = read_header(["given_name", "email", "phone", "birthday", "tags", "store_id"])
    clock = Clock.starting(datetime(2026, 11, 23, 8, 0, 0, tzinfo=UTC))
    rows = [
        (2, ['Zoë \\ "Q"', "Z@example.my", "012-345 6789", "02-29", "vip;a:b", "kl-01"]),
        (3, ["", "z@example.my", "", "2001-01-31", "", ""]),
    ]
    valid, errors, prepared, *_ = check_batch(
        columns, rows, "MY", date(2026, 11, 23), clock.base_us, "88", 12
    )
    assert errors == []
    plan = resolve([], valid, prepared, clock, set(), [])
    (contact,) = plan.created
    assert isinstance(contact, ContactState), "changed by the second row"
    signed_up, updated = (_outbox_fields(line) for line in plan.events)
    event_id, topic, key, event_type, payload = signed_up
    expected = CustomerSignedUp(
        customer_id=uuid.UUID(contact.id),
        profile=ProfileSnapshot(
            given_name='Zoë \\ "Q"',
            email="z@example.my",
            phone="+60123456789",
            card_number=contact.card_number,
            birthday=Birthday(month=2, day=29),
            tags=["a:b", "vip"],
        ),
        source="import",
        store_id="kl-01",
        signed_up_at=clock.at(0),
    )
    envelope = expected.to_envelope(
        source="contacts", event_id=uuid.UUID(event_id), time=clock.at(0)
    )
    assert (topic, key, event_type) == (expected.topic, contact.id, expected.event_type)
    assert payload == envelope.model_dump_json(), "a time on the second has no fraction"

    event_id, topic, key, event_type, payload = updated
    change = CustomerUpdated(
        customer_id=uuid.UUID(contact.id),
        changed=["birthday"],
        profile=expected.profile.model_copy(
            update={"birthday": Birthday(month=1, day=31, year=2001)}
        ),
        updated_at=clock.at(1),
    )
    envelope = change.to_envelope(source="contacts", event_id=uuid.UUID(event_id), time=clock.at(1))
    assert (key, event_type) == (contact.id, "customer.updated")
    assert payload == envelope.model_dump_json()
    assert clock.stamp(1) == "2026-11-23T08:00:00.000001Z"


@pytest.mark.parametrize(
    ("body", "content_type", "status", "needle"),
    [
        (b"", "text/csv", 422, "empty"),
        (b"email,phone\n", "text/csv", 422, "no rows"),
        (b"email,colour\na@example.my,red\n", "text/csv", 422, "header.colour"),
        (b"given_name\nAisyah\n", "text/csv", 422, "at least one of email"),
        (b"email,email\na@b.my,c@d.my\n", "text/csv", 422, "twice"),
        (b"email,phone\n\xff\xfe,\n", "text/csv", 422, "line 2 is not UTF-8"),
        (b'email\n"a@example.my\n' + b"x" * 200_000 + b"\n", "text/csv", 422, "line"),
        (b"email\n" + b"x" * (1 << 20) + b"@example.my\n", "text/csv", 422, "longer than"),
        (b"email\na@example.my\n", "application/json", 415, "text/csv"),
        (b"email\na@example.my\n", "text/csv; charset=latin-1", 415, "UTF-8"),
    ],
)
async def test_unusable_files_are_refused_and_nothing_goes_in(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    settings: Settings,
    body: bytes,
    content_type: str,
    status: int,
    needle: str,
) -> None:
    response = await client.post(
        "/v1/contacts/imports", content=body, headers={**admin, "Content-Type": content_type}
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert needle in response.text
    listed = await client.get("/v1/contacts", headers=admin)
    assert listed.json()["items"] == []
    assert (await client.get("/v1/contacts/imports", headers=admin)).json()["items"] == []
    assert list((Path(settings.data_dir) / "imports").glob("*")) == []


async def test_row_and_size_limits_are_413(database_url: str, tmp_path: Path) -> None:
    small = ImportSettings(
        database_url=database_url,
        jwt_secret=SECRET,
        data_dir=tmp_path,
        contacts_import_max_rows=3,
        contacts_import_max_bytes=4096,
    )
    async with client_for(create_app(small, [SERVICE])) as client:
        admin = auth(small, Scope.ADMIN)
        rows = [[f"p{i}@example.my"] for i in range(4)]
        response = await upload(client, admin, table(["email"], *rows))
        assert response.status_code == 413, response.text
        assert response.json()["type"].endswith("/import-too-large")
        big = await upload(
            client, admin, table(["email", "given_name"], ["b@example.my", "x" * 5000])
        )
        assert big.status_code == 413 and "4096 bytes" in big.json()["detail"]
        ok = await upload(client, admin, table(["email"], *rows[:3]))
        assert (await finished(client, admin, ok))["rows_created"] == 3
    assert list((tmp_path / "imports").glob("*")) == []


async def test_progress_and_error_report_of_a_bigger_file(
    database_url: str, tmp_path: Path
) -> None:
    # Small batches and worker processes, as a big file gets them.
    tuned = ImportSettings(
        database_url=database_url,
        jwt_secret=SECRET,
        data_dir=tmp_path,
        contacts_import_batch_size=1000,
        contacts_import_process_threshold=0,
    )
    rows = []
    for i in range(5000):
        email = f"user{i}@example.my" if i % 500 != 7 else f"user{i}@@example.my"
        rows.append([email, f"+6012{i:07d}", f"N{i}", "vip" if i % 2 else ""])
    rows.append(["user0@example.my", "", "Renamed", ""])  # the first row again, changed
    async with client_for(create_app(tuned, [SERVICE])) as client:
        admin = auth(tuned, Scope.ADMIN)
        response = await upload(
            client, admin, table(["email", "phone", "given_name", "tags"], *rows)
        )
        job = await finished(client, admin, response)
        assert job["status"] == "completed", job
        assert (job["rows_total"], job["rows_seen"]) == (5001, 5001)
        assert (job["rows_created"], job["rows_updated"], job["rows_failed"]) == (4990, 1, 10)

        first = await client.get(job["errors_url"], params={"limit": 4}, headers=admin)
        page = first.json()
        assert [item["line"] for item in page["items"]] == [9, 509, 1009, 1509]
        following = await client.get(
            job["errors_url"], params={"limit": 100, "cursor": page["next_cursor"]}, headers=admin
        )
        assert following.json()["items"][0]["line"] == 2009
        assert following.json()["next_cursor"] is None

        report = await client.get(f"{job['errors_url']}.csv", headers=admin)
        assert report.status_code == 200
        assert report.headers["content-type"].startswith("text/csv")
        lines = list(csv.reader(io.StringIO(report.text)))
        assert lines[0] == ["line", "reason"] and len(lines) == 11
        assert lines[1][0] == "9" and lines[1][1].startswith("email: ")

        listed = (await client.get("/v1/contacts/imports", headers=admin)).json()
        assert [item["id"] for item in listed["items"]] == [job["id"]]
        contacts = (await client.get("/v1/contacts", params={"limit": 3}, headers=admin)).json()
        assert [c["given_name"] for c in contacts["items"]] == ["Renamed", "N1", "N2"]

        # Several pages of the export's cursor, in file order.
        export = await client.get("/v1/contacts/export.csv", params={"tag": "vip"}, headers=admin)
        exported = list(csv.DictReader(io.StringIO(export.text)))
        assert len(exported) == 2490  # odd rows, less the 10 bad ones
        assert [row["given_name"] for row in exported[:2]] == ["N1", "N3"]
        assert exported[-1]["given_name"] == "N4999"


async def test_a_stop_interrupts_between_batches_and_a_start_resumes(
    database_url: str, tmp_path: Path, engine: AsyncEngine
) -> None:
    tuned = ImportSettings(
        database_url=database_url,
        jwt_secret=SECRET,
        data_dir=tmp_path,
        contacts_import_batch_size=50,
    )
    admin = auth(tuned, Scope.ADMIN)
    rows = [[f"stop{i}@example.my", f"N{i}"] for i in range(3000)]
    async with client_for(create_app(tuned, [SERVICE])) as client:
        response = await upload(client, admin, table(["email", "given_name"], *rows))
        assert response.status_code == 202
    # The app stopped at once: the job waits, its committed batches in, its file kept.
    async with engine.connect() as connection:
        status, seen = (
            await connection.execute(text("SELECT status, rows_seen FROM contacts.import_jobs"))
        ).one()
    assert status == "running" and seen < 3000 and seen % 50 == 0
    assert (tmp_path / "imports" / f"{response.json()['id']}.csv").exists()
    job_url = response.headers["location"]
    async with client_for(create_app(tuned, [SERVICE])) as client:
        job = await finished(client, admin, job_url)
        assert (job["status"], job["rows_seen"], job["rows_created"]) == ("completed", 3000, 3000)
        assert job["rows_total"] == 3000
        listed = await client.get("/v1/contacts/export.csv", headers=admin)
        emails = [row["email"] for row in csv.DictReader(io.StringIO(listed.text))]
        assert emails == [f"stop{i}@example.my" for i in range(3000)], "each row once, in order"
    assert list((tmp_path / "imports").glob("*")) == []


def test_a_generated_card_someone_holds_is_replaced() -> None:
    columns = read_header(["email"])
    clock = Clock.starting(datetime(2026, 11, 23, tzinfo=UTC))
    checked = check_batch(
        columns, [(2, ["a@example.my"])], "MY", date(2026, 11, 23), clock.base_us, "88", 12
    )
    generated = checked.generated[0]
    plan = resolve([], checked.valid, checked.prepared, clock, {generated}, ["881234567897"])
    (contact,) = plan.created
    assert isinstance(contact, ContactState)
    assert contact.card_number == "881234567897"
    assert b"881234567897" in plan.insert_lines()[0] and generated.encode() not in plan.events[0]
    assert json.loads(_outbox_fields(plan.events[0])[4])["data"]["profile"]["card_number"] == (
        "881234567897"
    )


async def test_an_interrupted_job_resumes_where_it_stopped(
    settings: Settings, engine: AsyncEngine, pos: dict[str, str], admin: dict[str, str]
) -> None:
    # A stop between batches leaves the job `running` with `rows_seen` rows committed and
    # its file on disk; the next start goes on from the row after.
    app = create_app(settings, [SERVICE])
    async with client_for(app):
        pass  # migrations
    job_id = uuid.uuid4()
    folder = Path(settings.data_dir) / "imports"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{job_id}.csv").write_bytes(
        table(["email"], ["done@example.my"], [""], ["next@example.my"], ["last@example.my"])
    )
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO contacts.import_jobs (id, status, rows_seen, rows_created, "
                "created_at) VALUES (:id, 'running', 1, 1, now())"
            ),
            {"id": job_id},
        )
    async with client_for(create_app(settings, [SERVICE])) as client:
        job = await finished(client, admin, f"/v1/contacts/imports/{job_id}")
        assert (job["status"], job["rows_seen"], job["rows_created"]) == ("completed", 3, 3)
        assert await lookup(client, pos, email="done@example.my") is None
        assert (await lookup(client, pos, email="last@example.my")) is not None
    assert not (folder / f"{job_id}.csv").exists()


async def test_export_streams_filtered_csv_that_imports_back(
    client: httpx.AsyncClient, admin: dict[str, str], engine: AsyncEngine
) -> None:
    body = table(
        ["given_name", "email", "phone", "birthday", "tags", "attr:drink", "attr:visits"],
        ["Aisyah", "a@example.my", "0123456789", "1990-03-14", "vip;coffee", "teh", "3"],
        ["=HYPERLINK(1)", "b@example.my", "", "02-29", "coffee", "", ""],
        ["Chong", "c@example.my", "", "", "", "kopi", ""],
    )
    await imported(client, admin, body)
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO contacts.consents (contact_id, channel, status, source, changed_at) "
                "SELECT id, 'email', 'granted', 'test', now() FROM contacts.contacts "
                "WHERE email = 'c@example.my'"
            )
        )

    response = await client.get("/v1/contacts/export.csv", headers=admin)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"].startswith("attachment; filename=")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert list(rows[0])[:6] == ["id", "given_name", "family_name", "email", "phone", "card_number"]
    assert list(rows[0])[-2:] == ["attr:drink", "attr:visits"]
    assert [r["email"] for r in rows] == ["a@example.my", "b@example.my", "c@example.my"]
    aisyah, formula, chong = rows
    assert aisyah["phone"] == "+60123456789", "a number is not escaped"
    assert (aisyah["birthday"], aisyah["tags"], aisyah["attr:visits"]) == (
        "1990-03-14",
        "coffee;vip",
        "3",
    )
    assert formula["given_name"] == "'=HYPERLINK(1)", "formulas are defused"
    assert formula["birthday"] == "02-29"
    assert (chong["consent:email"], aisyah["consent:email"]) == ("granted", "")

    async def emails(**query: str) -> list[str]:
        answer = await client.get("/v1/contacts/export.csv", params=query, headers=admin)
        assert answer.status_code == 200, answer.text
        return [r["email"] for r in csv.DictReader(io.StringIO(answer.text))]

    assert await emails(tag="coffee") == ["a@example.my", "b@example.my"]
    assert await emails(q="chong") == ["c@example.my"]
    assert await emails(consent="email:granted") == ["c@example.my"]
    created = datetime.fromisoformat(chong["created_at"])
    assert await emails(created_from=created.isoformat()) == ["c@example.my"]
    assert await emails(created_to=created.isoformat()) == ["a@example.my", "b@example.my"]
    later = (created + timedelta(days=1)).isoformat()
    assert await emails(created_from=later) == []
    bad = await client.get("/v1/contacts/export.csv", params={"consent": "fax"}, headers=admin)
    assert bad.status_code == 422

    again = await imported(client, admin, response.content)
    assert (again["rows_unchanged"], again["rows_failed"]) == (3, 0), "an export re-imports"
    assert (await client.get("/v1/contacts", headers=admin)).json()["items"][1]["given_name"] == (
        "=HYPERLINK(1)"
    )


async def test_an_idempotency_key_replays_the_same_job(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    body = table(["email"], ["once@example.my"])
    headers = {**admin, "Idempotency-Key": "upload-1"}
    first = await upload(client, headers, body)
    again = await upload(client, headers, body)
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.json()["id"] == first.json()["id"]
    assert (await finished(client, admin, first))["rows_created"] == 1
    assert len((await client.get("/v1/contacts/imports", headers=admin)).json()["items"]) == 1


async def test_scopes(
    client: httpx.AsyncClient, pos: dict[str, str], reader: dict[str, str], admin: dict[str, str]
) -> None:
    job = await imported(client, admin, table(["email"], ["s@example.my"]))
    for headers in (pos, reader, {}):
        expected = 401 if not headers else 403
        assert (await upload(client, headers, table(["email"], ["t@example.my"]))).status_code == (
            expected
        )
        for path in (
            "/v1/contacts/imports",
            f"/v1/contacts/imports/{job['id']}",
            job["errors_url"],
            f"{job['errors_url']}.csv",
            "/v1/contacts/export.csv",
        ):
            assert (await client.get(path, headers=headers)).status_code == expected, path
    missing = await client.get(f"/v1/contacts/imports/{uuid.uuid4()}", headers=admin)
    assert missing.status_code == 404
    assert missing.json()["type"].endswith("/import-not-found")


def _same(fast: Any, slow: Any, *args: str) -> None:
    try:
        expected: tuple[str, str] = ("ok", slow(*args))
    except InvalidValue as exc:
        expected = ("error", str(exc))
    try:
        actual: tuple[str, str] = ("ok", fast(*args))
    except InvalidValue as exc:
        actual = ("error", str(exc))
    assert actual == expected


@hypothesis_settings(max_examples=400, deadline=None)
@given(
    local=st.text(alphabet="abcXY09._+-'!é\" ", max_size=12),
    at=st.sampled_from(["@", "@@", "", " @"]),
    domain=st.sampled_from(
        ["example.my", "Example.COM", "x.test", "localhost", "-a.com", "a..b.my", "bücher.de", ""]
    ),
)
def test_the_email_fast_path_agrees_with_the_validator(local: str, at: str, domain: str) -> None:
    _same(fast_email, normalize_email, local + at + domain)


@hypothesis_settings(max_examples=600, deadline=None)
@given(
    prefix=st.sampled_from(["+60", "+6", "0", "00", "+66", "", "+", "060", "+600"]),
    digits=st.text(alphabet="0123456789 -", max_size=14),
    region=st.sampled_from(["MY", "TH", "SG", "ID", "GB", "US", "IT", "AR"]),
)
def test_the_phone_fast_path_agrees_with_phonenumbers(
    prefix: str, digits: str, region: str
) -> None:
    _same(fast_phone, normalize_phone, prefix + digits, region)
