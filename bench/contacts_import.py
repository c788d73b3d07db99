"""Benchmark of the contacts CSV import, beside PostgreSQL's own COPY, and till lookups.

Run with `python -m bench.contacts_import` (1,000,000 rows; `--rows N` for a quicker run,
`--help` for the knobs). It prints a report, then the raw numbers as JSON.

What runs
    One embedded PostgreSQL server in a temporary folder (bench/infra.py), a fresh
    database migrated by the contacts service. A deterministic CSV is generated first:
    unique emails, valid Malaysian mobiles written as `+6012xxxxxxx` or `01x-xxxxxxx`, a
    card number on a third of the rows, birthdays, locales, tags, a store and a custom
    attribute; about 1 row in 330 is bad (email, phone or birthday) and 1 in 211 repeats
    an earlier customer's email with a new name (an update).

Import
    The real code path: the contacts app (shared/http/app.py with the contacts service)
    runs in this process with its lifespan, and the file is POSTed to
    `/v1/contacts/imports` through `httpx.ASGITransport`, streamed from disk. The clock
    runs from the first byte sent until the job's `finished_at` (the job is polled
    every 0.5 s, as a request costs the app CPU):
    upload, the full check of the file, and every batch (rows checked in the import's
    worker process(es), contacts, outbox events and error lines written and committed).

COPY
    The same file, into a plain table of text columns (no indexes) on the same server,
    with asyncpg's `copy_to_table(format="csv")`: PostgreSQL parsing and storing the
    rows and nothing else. The goal: the import at no less than a third of COPY's rate.
    For scale, the report also times COPY of the import's own result (the contacts rows
    and the outbox rows, binary) into empty copies of those tables with their indexes:
    what storing the rows costs before any of the import's logic.

Lookup
    `GET /v1/contacts/lookup?phone=...` against a real server (`crm serve contacts`,
    uvicorn, one process) on loopback, after the import (so over its million customers):
    first one client alone (the unloaded latency), then `--concurrency` clients keeping
    one request each in flight until `--lookups` requests are done. Phones of imported
    customers, written in the national format the till types. Latency is per request as
    the client (this process, on the same machine) sees it, after a warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]

from bench.infra import EmbeddedServer
from bench.probes import percentile
from services.contacts import SERVICE
from services.contacts.normalize import luhn_check_digit
from shared.auth import Scope, issue_token
from shared.http.app import create_app
from shared.logging import configure_logging
from shared.settings import Settings
from tests.http.app import client_for

SECRET = "bench-contacts-import-secret-0123456789-abcdefghijklmnop"
DATABASE = "bench_import"
HEADER = [
    "given_name",
    "family_name",
    "email",
    "phone",
    "card_number",
    "birthday",
    "locale",
    "time_zone",
    "tags",
    "store_id",
    "attr:favourite_drink",
]
GIVEN = ["Aisyah", "Wei Ling", "Kumar", "Nurul", "Jason", "Siti", "Arjun", "Mei", "Farah", "Ah Kow"]
FAMILY = ["Rahman", "Tan", "Subramaniam", "Lim", "Abdullah", "Wong", "Ng", "Lee", "Ismail"]
DOMAINS = ["gmail.com", "yahoo.com", "hotmail.com", "outlook.com", "example.my", "mail.my"]
MOBILE = ["12", "16", "19"]  # every 7-digit subscriber number is valid after these
LOCALES = ["ms-MY", "en-MY", "zh-MY", "ta-MY", ""]
TAGS = ["vip", "coffee", "student", "staff", "newsletter", "kl", "penang"]
DRINKS = ["teh tarik", "kopi o", "milo", "latte", ""]


@dataclass(frozen=True)
class Generated:
    """The file and what it holds."""

    path: Path
    rows: int
    bad: int
    repeats: int
    bytes: int
    phones: list[str]


def generate(path: Path, rows: int, seed: int = 20261123) -> Generated:
    """A deterministic import file of `rows` rows (plus the header)."""
    chance = random.Random(seed)
    bad = repeats = 0
    phones: list[str] = []
    recent: deque[str] = deque(maxlen=101)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(HEADER)
        for i in range(rows):
            given, family = chance.choice(GIVEN), chance.choice(FAMILY)
            local = f"{given}.{family}.{i}".lower().replace(" ", "")
            email = f"{local}@{DOMAINS[i % len(DOMAINS)]}"
            recent.append(email)
            prefix, number = MOBILE[i % len(MOBILE)], f"{i // len(MOBILE):07d}"
            phone = f"+60{prefix}{number}" if i % 2 else f"0{prefix}-{number}"
            card = ""
            if i % 3 == 0:
                body = f"77{i:09d}"
                card = body + luhn_check_digit(body)
            year = chance.randint(1950, 2008)
            birthday = f"{year}-{chance.randint(1, 12):02d}-{chance.randint(1, 28):02d}"
            if i % 7 == 0:
                birthday = birthday[5:]
            elif i % 11 == 0:
                birthday = ""
            tags = ";".join(chance.sample(TAGS, chance.randint(0, 2)))
            row = [
                given,
                family,
                email,
                phone,
                card,
                birthday,
                chance.choice(LOCALES),
                "Asia/Kuala_Lumpur" if i % 4 else "",
                tags,
                f"kl-{i % 20:02d}",
                chance.choice(DRINKS),
            ]
            if i % 211 == 210:  # the customer of 100 rows before, renamed: an update
                row = [
                    "Renamed",
                    "",
                    recent[0],
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                ]
                repeats += 1
            elif i % 997 == 5:
                row[2] = email.replace("@", "@@")
                bad += 1
            elif i % 1009 == 6:
                row[3] = "12345"
                bad += 1
            elif i % 1013 == 7:
                row[5] = f"{year}-13-01"
                bad += 1
            elif i % 997 == 500 and len(phones) < 50_000:
                phones.append(f"0{prefix}{number}")
            writer.writerow(row)
    return Generated(path, rows, bad, repeats, path.stat().st_size, phones)


class BenchSettings(Settings):
    """The import knobs `ImportLimits.from_settings` reads, until Settings declares them."""

    contacts_import_workers: int | None = None
    contacts_import_batch_size: int | None = None


@dataclass
class ImportResult:
    seconds: float
    upload_seconds: float
    rows_per_second: float
    job: dict[str, Any]
    app_cpu: float
    server_cpu: float


async def _file_chunks(path: Path, size: int = 1 << 20) -> AsyncIterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(size):
            yield chunk


def _app_cpu() -> float:
    """CPU seconds of this process and its worker processes (not the database's)."""
    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    total += usage.ru_utime + usage.ru_stime
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "postgres" not in child.name():
                total += sum(child.cpu_times()[:2])
    return float(total)


async def run_import(
    server: EmbeddedServer, url: str, data: Generated, folder: Path, options: Options
) -> ImportResult:
    """POST the file through the ASGI app and wait for the job to complete."""
    settings = BenchSettings(
        database_url=url,
        jwt_secret=SECRET,
        data_dir=folder,
        log_level="WARNING",
        contacts_import_workers=options.workers,
        contacts_import_batch_size=options.batch_size,
    )
    token = issue_token(settings, subject="bench", scopes=[Scope.ADMIN])
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        client_for(create_app(settings, [SERVICE])) as client,
    ):
        client.timeout = httpx.Timeout(600)
        cpu, server_cpu = _app_cpu(), server.cpu_seconds()
        started = time.perf_counter()
        started_at = datetime.now(UTC)
        response = await client.post(
            "/v1/contacts/imports",
            content=_file_chunks(data.path),
            headers={**headers, "Content-Type": "text/csv"},
            params={"filename": data.path.name},
        )
        uploaded = time.perf_counter() - started
        if response.status_code != 202:
            raise RuntimeError(f"upload refused: {response.status_code} {response.text}")
        location = response.headers["location"]
        while True:
            # Polled rarely (a request costs the app CPU); the job's own finish time,
            # on the same clock, ends the measurement.
            await asyncio.sleep(0.5)
            job = (await client.get(location, headers=headers)).json()
            if job["status"] != "running":
                break
        finished_at = datetime.fromisoformat(job["finished_at"])
        seconds = (finished_at - started_at).total_seconds()
        cpu, server_cpu = _app_cpu() - cpu, server.cpu_seconds() - server_cpu
    if job["status"] != "completed":
        raise RuntimeError(f"the import did not complete: {job}")
    return ImportResult(seconds, uploaded, data.rows / seconds, job, cpu, server_cpu)


@dataclass
class CopyResult:
    seconds: float
    rows_per_second: float
    server_cpu: float


async def run_copy(server: EmbeddedServer, data: Generated) -> CopyResult:
    """COPY the same file into a plain table of text columns."""
    import asyncpg

    connection = await asyncpg.connect(host=server.socket_dir, user="postgres", database=DATABASE)
    try:
        columns = ", ".join(f'"{name}" text' for name in HEADER)
        await connection.execute(f"CREATE TABLE public.copy_baseline ({columns})")
        cpu = server.cpu_seconds()
        started = time.perf_counter()
        status = await connection.copy_to_table(
            "copy_baseline", source=str(data.path), format="csv", header=True
        )
        seconds = time.perf_counter() - started
        cpu = server.cpu_seconds() - cpu
        copied = int(status.split()[-1])
        assert copied == data.rows, status
    finally:
        await connection.close()
    return CopyResult(seconds, data.rows / seconds, cpu)


@dataclass
class FloorResult:
    contacts: int
    events: int
    contacts_seconds: float
    outbox_seconds: float


async def run_floor(server: EmbeddedServer) -> FloorResult:
    """COPY the import's result (binary) into empty copies of its tables, indexes included."""
    import asyncpg

    connection = await asyncpg.connect(host=server.socket_dir, user="postgres", database=DATABASE)
    try:
        times = []
        counts = []
        for table in ("contacts", "outbox"):
            await connection.execute(
                f"CREATE TABLE public.floor_{table} (LIKE contacts.{table} INCLUDING ALL)"
            )
            dump = server.data_dir / f"{table}.bin"
            await connection.copy_from_table(
                table, schema_name="contacts", output=str(dump), format="binary"
            )
            os.chmod(dump, 0o644)
            started = time.perf_counter()
            status = await connection.copy_to_table(
                f"floor_{table}", schema_name="public", source=str(dump), format="binary"
            )
            times.append(time.perf_counter() - started)
            counts.append(int(status.split()[-1]))
            dump.unlink()
    finally:
        await connection.close()
    return FloorResult(counts[0], counts[1], times[0], times[1])


@dataclass
class LookupResult:
    requests: int
    concurrency: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def run_lookups(
    url: str, folder: Path, phones: Sequence[str], options: Options
) -> list[LookupResult]:
    """Till lookups by phone against `crm serve contacts` on loopback: one client alone
    (the unloaded latency), then `--concurrency` clients."""
    port = _free_port()
    settings = Settings(jwt_secret=SECRET)
    token = issue_token(settings, subject="till", scopes=[Scope.POS], store_id="kl-01")
    environment = {
        **os.environ,
        "CRM_DATABASE_URL": url,
        "CRM_JWT_SECRET": SECRET,
        "CRM_DATA_DIR": str(folder),
        "CRM_PORT": str(port),
        "CRM_LOG_LEVEL": "WARNING",
    }
    crm = Path(sys.executable).parent / "crm"
    process = await asyncio.create_subprocess_exec(
        str(crm), "serve", "contacts", env=environment, stdout=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    limits = httpx.Limits(max_connections=options.concurrency)
    try:
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
            for _ in range(300):
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/v1/contacts/healthz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
            headers = {"Authorization": f"Bearer {token}"}
            chance = random.Random(7)
            errors = 0

            async def one() -> float:
                nonlocal errors
                phone = chance.choice(phones)
                began = time.perf_counter()
                answer = await client.get(
                    "/v1/contacts/lookup", params={"phone": phone}, headers=headers
                )
                took = time.perf_counter() - began
                if answer.status_code != 200:
                    errors += 1
                return took

            for _ in range(200):  # warm-up: connections, prepared statements, caches
                await one()

            async def measure(requests: int, concurrency: int) -> LookupResult:
                nonlocal errors
                latencies: list[float] = []
                remaining, errors = requests, 0

                async def client_loop() -> None:
                    nonlocal remaining
                    while remaining > 0:
                        remaining -= 1
                        latencies.append(await one())

                started = time.perf_counter()
                await asyncio.gather(*(client_loop() for _ in range(concurrency)))
                seconds = time.perf_counter() - started
                ordered = sorted(latencies)
                return LookupResult(
                    len(ordered),
                    concurrency,
                    seconds,
                    percentile(ordered, 0.50) * 1000,
                    percentile(ordered, 0.99) * 1000,
                    ordered[-1] * 1000,
                    errors,
                )

            alone = await measure(min(1000, options.lookups), 1)
            loaded = await measure(options.lookups, options.concurrency)
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=30)
    return [alone, loaded]


@dataclass(frozen=True)
class Options:
    rows: int
    lookups: int
    concurrency: int
    workers: int | None
    batch_size: int | None
    json_path: Path | None


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.contacts_import", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the CSV file")
    parser.add_argument("--lookups", type=int, default=5000, help="lookup requests to time")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent lookup clients")
    parser.add_argument("--workers", type=int, help="import worker processes (default: auto)")
    parser.add_argument("--batch-size", type=int, help="rows per import transaction")
    parser.add_argument("--json", dest="json_path", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    return Options(
        args.rows, args.lookups, args.concurrency, args.workers, args.batch_size, args.json_path
    )


async def run(options: Options) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="crm-import-bench-"))
    server = EmbeddedServer()
    try:
        describe = await server.describe()
        began = time.perf_counter()
        data = generate(folder / "customers.csv", options.rows)
        generated = time.perf_counter() - began
        url = await server.create_database(DATABASE)
        imported = await run_import(server, url, data, folder, options)
        copied = await run_copy(server, data)
        floor = await run_floor(server)
        lookups = await run_lookups(url, folder, data.phones, options)
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    job = imported.job
    ratio = imported.rows_per_second / copied.rows_per_second
    floor_seconds = floor.contacts_seconds + floor.outbox_seconds
    settings = ", ".join(f"{k}={v}" for k, v in describe.items())
    lines = [
        "Contacts CSV import benchmark",
        f"server: {settings}; cpus={os.cpu_count()}",
        f"file: {data.rows:,} rows, {data.bytes / 1e6:,.1f} MB, {data.bad:,} bad rows, "
        f"{data.repeats:,} rows repeating an earlier customer (generated in {generated:.1f} s)",
        "",
        "import: POST /v1/contacts/imports through the ASGI app in this process, until the job "
        "completed",
        f"  {imported.seconds:,.2f} s = {imported.rows_per_second:,.0f} rows/s "
        f"(upload + whole-file check: {imported.upload_seconds:.2f} s)",
        f"  created {job['rows_created']:,}, updated {job['rows_updated']:,}, unchanged "
        f"{job['rows_unchanged']:,}, failed {job['rows_failed']:,}; "
        f"{floor.events:,} outbox events",
        f"  CPU: app {imported.app_cpu:,.1f} s (this process and its import workers), "
        f"PostgreSQL {imported.server_cpu:,.1f} s",
        f"COPY of the same file into a plain text table: {copied.seconds:,.2f} s = "
        f"{copied.rows_per_second:,.0f} rows/s (PostgreSQL CPU {copied.server_cpu:.1f} s)",
        f"import / COPY: {ratio:.3f}  (goal >= 0.333: {'met' if ratio >= 1 / 3 else 'NOT met'})",
        f"for scale: COPY (binary) of the import's result into empty copies of its tables, "
        f"indexes included: contacts {floor.contacts_seconds:.2f} s + outbox "
        f"{floor.outbox_seconds:.2f} s = {floor_seconds:.2f} s "
        f"({floor.contacts / floor_seconds:,.0f} rows/s)",
        "",
        "lookup by phone: GET /v1/contacts/lookup?phone=... on `crm serve contacts` (uvicorn, "
        f"one process) over loopback, {data.rows:,} customers in the table",
        *(
            f"  {r.concurrency:>2} client{'s' if r.concurrency > 1 else ' '}: "
            f"p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms, max {r.max_ms:.1f} ms, "
            f"{r.requests / r.seconds:,.0f} requests/s ({r.requests:,} requests, "
            f"{r.errors} errors)"
            for r in lookups
        ),
    ]
    print("\n".join(lines))
    return {
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
        "server": {**describe, "cpus": os.cpu_count()},
        "file": {"rows": data.rows, "bytes": data.bytes, "bad": data.bad, "repeats": data.repeats},
        "import": asdict(imported),
        "copy": asdict(copied),
        "ratio": ratio,
        "floor": asdict(floor),
        "lookup": [asdict(result) for result in lookups],
    }


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m bench.contacts_import`."""
    configure_logging("WARNING", json=False)
    options = parse_options(argv)
    started = time.monotonic()
    raw = asyncio.run(run(options))
    raw["total_seconds"] = round(time.monotonic() - started, 1)
    text = json.dumps(raw, indent=2)
    print("\nRaw results (JSON):")
    print(text)
    if options.json_path is not None:
        options.json_path.write_text(text + "\n")


if __name__ == "__main__":
    main()
