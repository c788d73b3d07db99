"""Benchmark of the messaging dispatcher: messages per second for a campaign delivered into a
local SMTP sink, beside a bare aiosmtplib loop with the same concurrency into the same sink.

Run with `python -m bench.messaging`; `--quick` sends 5,000 messages instead of 100,000;
`--help` lists the knobs.

What runs
    One embedded PostgreSQL server (bench/infra.py) with a fresh database, migrated for the
    messaging service. `--recipients` recipients with email consent, and one template
    (`ms-MY`, personalised with name, points and a voucher code) are inserted untimed. The
    SMTP sink is aiosmtpd in a child process (so it does not share our GIL) with a handler
    that only counts messages.

What is measured
    ours: `sends.enqueue_many` of the whole campaign (timed on its own), then a
    `Dispatcher` with `smtp_concurrency` = `--concurrency` draining the ledger
    (`run(until_idle=True)`): claim with SKIP LOCKED, consent / quiet hours / caps checks,
    render, reserve + commit, send through pooled SMTP sessions, record `sent` and the
    `message.sent` outbox rows. Messages per second = recipients / drain seconds; the
    end-to-end rate includes the enqueue.
    bare: the same number of messages, encoded by the same `encode_message` with the same
    headers and an unsubscribe link of the same length, sent by `--concurrency` tasks each
    holding one aiosmtplib session. No database at all: the ceiling the dispatcher is
    compared with. Goal: ratio >= 0.8.
    Every message must reach the sink once and every ledger row must end `sent`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from multiprocessing.sharedctypes import Synchronized
from typing import Any

import aiosmtplib
import sqlalchemy as sa

from bench.infra import EmbeddedServer
from services.messaging import SERVICE, sends
from services.messaging.channels.email import encode_message
from services.messaging.dispatcher import Dispatcher
from services.messaging.models import recipients, templates
from shared.runtime import Runtime
from shared.settings import Settings

TEMPLATE_BODY = (
    "Hai {{ name }},\n\nAnda ada {{ points }} mata ({{ tier }}). Kod baucar anda: "
    "{{ voucher_code }}, sah hingga {{ expiry_date }}.\n\nBerhenti langgan: {{ unsubscribe_url }}\n"
)
INSERT_CHUNK = 2000
# As long as a real one (a signed token), so both sides build the same message.
UNSUBSCRIBE = "https://crm.example.my/v1/contacts/unsubscribe?token=" + "x" * 260


@dataclass(frozen=True)
class Options:
    recipients: int
    concurrency: int
    batch_size: int
    json_path: str | None


@dataclass
class Outcome:
    messages: int
    seconds: float
    enqueue_seconds: float = 0.0

    @property
    def per_second(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


def parse(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.messaging", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="5,000 recipients")
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=16, help="SMTP sessions at once")
    parser.add_argument("--batch-size", type=int, default=1000, help="rows per dispatcher claim")
    parser.add_argument("--json", dest="json_path", default=None, help="write raw results here")
    args = parser.parse_args(argv)
    count = 5_000 if args.quick else args.recipients
    return Options(count, args.concurrency, args.batch_size, args.json_path)


# The sink -------------------------------------------------------------------------------


class CountingHandler:
    def __init__(self, counter: Synchronized[int]) -> None:
        self.counter = counter

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.counter.get_lock():
            self.counter.value += 1
        return "250 2.0.0 OK"


def _serve_sink(port: int, counter: Synchronized[int], ready: Any, stop: Any) -> None:
    from aiosmtpd.controller import Controller

    controller = Controller(CountingHandler(counter), hostname="127.0.0.1", port=port)
    controller.start()
    ready.set()
    stop.wait()
    controller.stop()


class Sink:
    """aiosmtpd in a child process, counting what it accepts."""

    def __init__(self) -> None:
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        context = multiprocessing.get_context("spawn")
        self.counter: Synchronized[int] = context.Value("q", 0)
        self._ready = context.Event()
        self._stop = context.Event()
        self._process = context.Process(
            target=_serve_sink, args=(self.port, self.counter, self._ready, self._stop), daemon=True
        )

    def start(self) -> None:
        self._process.start()
        if not self._ready.wait(30):
            raise RuntimeError("the SMTP sink did not start")

    @property
    def count(self) -> int:
        return int(self.counter.value)

    def stop(self) -> None:
        self._stop.set()
        self._process.join(10)


# Bare loop ------------------------------------------------------------------------------


async def bare_loop(port: int, messages: int, concurrency: int) -> Outcome:
    """`concurrency` aiosmtplib sessions sending `messages` prebuilt-per-message emails."""
    remaining = iter(range(messages))

    async def worker() -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await client.connect()
        for n in remaining:
            mail = encode_message(
                sender="Our shop <hello@example.com>",
                to=f"bare{n}@example.my",
                subject=f"Tawaran istimewa untuk Pelanggan {n}",
                body=f"Hai Pelanggan {n},\n\nKod baucar anda: SPRING-{n}.\n\n{UNSUBSCRIBE}\n",
                message_id=f"<{uuid.uuid4()}@example.com>",
                extra=[("X-CRM-Send-Id", str(uuid.uuid4()))],
                unsubscribe_url=UNSUBSCRIBE,
            )
            await client.sendmail("hello@example.com", [f"bare{n}@example.my"], mail)
        await client.quit()

    began = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Outcome(messages, time.monotonic() - began)


# Ours -----------------------------------------------------------------------------------


async def seed(runtime: Runtime, count: int) -> list[uuid.UUID]:
    engine = runtime.engine(SERVICE.name)
    now = datetime.now(UTC)
    ids = [uuid.uuid4() for _ in range(count)]
    async with engine.begin() as connection:
        await connection.execute(
            sa.insert(templates).values(
                id=uuid.uuid4(),
                name="spring",
                channel="email",
                locale="ms-MY",
                subject="Tawaran istimewa untuk {{ name }}",
                body=TEMPLATE_BODY,
                created_at=now,
                updated_at=now,
            )
        )
        for start in range(0, count, INSERT_CHUNK):
            await connection.execute(
                sa.insert(recipients).values(
                    [
                        {
                            "customer_id": cid,
                            "status": "active",
                            "given_name": f"Pelanggan {start + i}",
                            "email": f"c{start + i}@example.my",
                            "locale": "ms-MY",
                            "time_zone": "Asia/Kuala_Lumpur",
                            "consents": {"email": "granted"},
                            "undeliverable": {},
                            "tier": "Gold",
                            "points_balance": 1000 + i,
                            "updated_at": now,
                        }
                        for i, cid in enumerate(ids[start : start + INSERT_CHUNK])
                    ]
                )
            )
    return ids


async def ours(
    runtime: Runtime, settings: Settings, ids: list[uuid.UUID], options: Options
) -> tuple[Outcome, dict[str, int]]:
    sessions = runtime.sessions(SERVICE.name)
    source = f"campaign:{uuid.uuid4()}"
    now = datetime.now(UTC)
    rows = [
        sends.EnqueueRow(
            source,
            cid,
            ["email"],
            "spring",
            {"offer": {"voucher_code": f"SPRING-{n}", "expires_at": "2026-12-31"}},
            now,
        )
        for n, cid in enumerate(ids)
    ]
    began = time.monotonic()
    async with sessions.begin() as session:
        await sends.enqueue_many(session, rows)
    enqueued = time.monotonic() - began

    dispatcher = Dispatcher(sessions, settings, batch_size=options.batch_size)
    began = time.monotonic()
    try:
        await dispatcher.run(until_idle=True)
    finally:
        await dispatcher.aclose()
    outcome = Outcome(len(ids), time.monotonic() - began, enqueued)
    async with sessions() as session:
        statuses: dict[str, int] = dict(
            (
                await session.execute(
                    sa.text("SELECT status, count(*) FROM messaging.sends GROUP BY status")
                )
            ).all()
        )
    return outcome, {str(k): int(v) for k, v in statuses.items()}


async def run(options: Options) -> dict[str, Any]:
    server = EmbeddedServer()
    sink = Sink()
    sink.start()
    try:
        url = await server.create_database("bench_messaging")
        settings = Settings(
            database_url=url,
            jwt_secret="bench-secret-bench-secret-bench-secret",
            smtp_port=sink.port,
            smtp_concurrency=options.concurrency,
            messaging_quiet_hours=(0, 0),
            messaging_frequency_caps={},
            public_base_url="https://crm.example.my",
        )
        runtime = Runtime(settings, [SERVICE])
        await runtime.open_databases()
        await runtime.migrate()
        try:
            ids = await seed(runtime, options.recipients)
            print(f"seeded {len(ids):,} recipients", file=sys.stderr, flush=True)
            bare = await bare_loop(sink.port, options.recipients, options.concurrency)
            after_bare = sink.count
            print(f"bare: {bare.per_second:,.0f} msg/s", file=sys.stderr, flush=True)
            mine, statuses = await ours(runtime, settings, ids, options)
            delivered = sink.count - after_bare
        finally:
            await runtime.stop()
    finally:
        sink.stop()
        server.stop()
    return {
        "options": asdict(options),
        "cpus": os.cpu_count(),
        "bare": {**asdict(bare), "per_second": bare.per_second, "delivered": after_bare},
        "ours": {**asdict(mine), "per_second": mine.per_second, "delivered": delivered},
        "ledger": statuses,
        "ratio": mine.per_second / bare.per_second if bare.per_second else 0.0,
    }


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m bench.messaging`."""
    options = parse(argv)
    raw = asyncio.run(run(options))
    n = options.recipients
    ours_, bare = raw["ours"], raw["bare"]
    print(
        f"Messaging benchmark: a {n:,}-recipient email campaign into a local aiosmtpd sink "
        f"(child process, counting only), {options.concurrency} SMTP sessions, "
        f"claims of {options.batch_size}; cpus={raw['cpus']}"
    )
    print(f"{'':<28}{'messages':>10}{'seconds':>10}{'msg/s':>10}")
    for label, row in (("bare aiosmtplib loop", bare), ("dispatcher (drain)", ours_)):
        print(
            f"{label:<28}{row['messages']:>10,}{row['seconds']:>10.2f}{row['per_second']:>10,.0f}"
        )
    total = ours_["seconds"] + ours_["enqueue_seconds"]
    print(f"{'enqueue_many + drain':<28}{n:>10,}{total:>10.2f}{n / total:>10,.0f}")
    print(f"ratio dispatcher / bare: {raw['ratio']:.2f}")
    exact = ours_["delivered"] == n and bare["delivered"] == n and raw["ledger"] == {"sent": n}
    print(
        f"every message delivered once, ledger all sent: {'yes' if exact else 'NO'} {raw['ledger']}"
    )
    print("Goal (ratio >= 0.8): " + ("reached" if raw["ratio"] >= 0.8 else "NOT reached"))
    print("\nRaw results (JSON):")
    print(json.dumps(raw))
    if options.json_path:
        with open(options.json_path, "w") as handle:
            json.dump(raw, handle, indent=2)


if __name__ == "__main__":
    main()
