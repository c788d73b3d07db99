"""Benchmark of the loyalty service: purchases applied per second by its consumer, next to
pgbench TPS on the same PostgreSQL, and HTTP latency of the till's two hot endpoints.

Run with `python -m bench.loyalty`; `--quick` is a smoke test of under a minute, the full
run takes a few minutes; `--help` lists the knobs.

What runs
    One embedded PostgreSQL server (bench/infra.py) serves everything: pgbench first
    (TPC-B-like, `-i -s 10`, then `-c 4 -j 2 -T 10`), then one scenario per transport and
    partition count, each on a fresh database. A scenario starts a `Runtime` for the
    loyalty service (it migrates the `loyalty` schema and, for the postgres transport, the
    `crm_events` log; for Kafka it creates the topics with 1 or 4 partitions on a fresh
    tansu broker), publishes `--purchases` `purchase.completed` envelopes straight onto
    `crm.purchases` through that transport, as an outside system would (source
    "bench-webshop", 1-5 lines each, over `--customers` customers, keyed by customer),
    and only then starts the loyalty consumer group: one `ConsumerRunner` per partition,
    built as `Runtime.start_workers` builds it, with the production defaults of `Settings`.

What is measured
    Consumer throughput = purchases applied / (moment the last one was visible in
    `loyalty.purchases` - `created_at` of the first one), so the Kafka group join before
    the first batch is not counted (it is shown as `join s`). Every purchase must end up
    in `loyalty.purchases` once; the ledger must balance (sum of earn entries = sum of
    purchase points). CPU is in % of one core over the drain (bench/infra.py CpuWindow).

    HTTP: the app (`create_app(settings, [SERVICE], run_workers=True)`, i.e. with its relay
    and consumer running, as deployed) is served by a real uvicorn server on a free
    loopback port in a child process; `--requests` POST /v1/loyalty/purchases (unique
    order ids, customers by id, a POS token) and then as many GET /v1/loyalty/members/{id}
    are sent by `--clients` concurrent closed-loop clients (httpx, in this process).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import random
import re
import sys
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import event as orm_event
from sqlalchemy import text

from bench.infra import CpuShares, CpuWindow, EmbeddedServer, run_pgbench
from bench.loyalty_http import LatencyResult, ServerProcess, load, purchase_body
from bench.pipeline import _plain, compact_json
from services.loyalty import SERVICE
from shared.auth import Scope, issue_token
from shared.db.engine import create_engine
from shared.events.purchases import PurchaseCompleted, PurchaseLine
from shared.logging import configure_logging
from shared.pipeline.consumer import ConsumerRunner
from shared.pipeline.transports.base import OutgoingMessage
from shared.runtime import Runtime
from shared.settings import Settings
from tests.support.broker import BrokerUnavailable, start_broker

TransportName = Literal["postgres", "kafka"]
SECRET = "bench-loyalty-secret-long-enough-for-hs256-0123456789"
SOURCE = "bench-webshop"
PUBLISH_CHUNK = 1000
STALL_SECONDS = 60.0
"""Give up on a scenario when no purchase has been applied for this long."""
CATEGORIES = ["grocery", "beauty", "apparel", "electronics", "home", None]
PROGRAMME_RULES = {
    "base_rates": {"MYR": "1"},
    "category_multipliers": {"beauty": "2", "electronics": "0.5"},
    "tier_multipliers": {"silver": "1.25", "gold": "1.5"},
    "per_purchase_cap": 5000,
    "per_day_cap": 8000,
}
PROGRAMME = [
    "INSERT INTO loyalty.earning_rules (effective_from, rules, created_at)"
    " VALUES ('2020-01-01', CAST(:rules AS jsonb), now())",
    "INSERT INTO loyalty.tiers (name, rank, basis, threshold, window_days, earn_multiplier,"
    " discount_percent, created_at) VALUES"
    " ('silver', 1, 'spend', 100000, 365, 1.25, 5, now()),"
    " ('gold', 2, 'spend', 500000, 365, 1.5, 10, now())",
    "INSERT INTO loyalty.stamp_card_definitions (id, name, categories, stamps_required,"
    " reward_description, voucher_valid_days, active, created_at) VALUES"
    " (gen_random_uuid(), 'beauty', ARRAY['beauty'], 8, 'free facial', 30, true, now())",
]
"""What a real shop configures: rules with multipliers and caps, two tiers, a stamp card."""


@dataclass(frozen=True)
class Options:
    """The resolved command line."""

    purchases: int
    customers: int
    transports: list[TransportName]
    partitions: list[int]
    requests: int
    clients: int
    http_customers: int
    pgbench_scale: int
    pgbench_seconds: int
    pgbench_clients: int
    pgbench_threads: int
    kafka_session_timeout_ms: int
    drain_limit: float
    batch_size: int
    http_limit: float
    profile: bool
    json_path: Path | None
    bare: bool = False


@dataclass
class ConsumerOutcome:
    """One consumer scenario; seconds unless the name says otherwise."""

    transport: str
    partitions: int
    purchases: int
    applied: int = 0
    publish_seconds: float = float("nan")
    join_seconds: float = float("nan")
    drain_seconds: float = float("nan")
    per_second: float = float("nan")
    vs_pgbench: float = float("nan")
    points: int = 0
    ledger_ok: bool = False
    by_partition: list[int] = field(default_factory=list)
    cpu: CpuShares | None = None
    statements_per_purchase: float = float("nan")
    note: str = ""


# ---------------------------------------------------------------------------- workload


def make_customers(count: int, seed: int) -> list[uuid.UUID]:
    rng = random.Random(seed)
    return [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(count)]


def random_lines(rng: random.Random) -> list[dict[str, Any]]:
    """1-5 receipt lines with realistic prices (RM 1.50 - RM 120) and quantities."""
    return [
        {
            "sku": f"SKU-{rng.randrange(5000):05d}",
            "category": rng.choice(CATEGORIES),
            "quantity": rng.choice([1, 1, 1, 2, 2, 3, 6]),
            "unit_price_minor": rng.randrange(150, 12_000, 5),
        }
        for _ in range(rng.randint(1, 5))
    ]


def purchase_messages(count: int, customers: Sequence[uuid.UUID]) -> list[OutgoingMessage]:
    """`count` purchase.completed envelopes from an outside system, keyed by customer."""
    rng = random.Random(7)
    now = datetime.now(UTC)
    messages = []
    for number in range(count):
        customer = rng.choice(customers)
        lines = [PurchaseLine(**line) for line in random_lines(rng)]
        event = PurchaseCompleted(
            purchase_id=uuid.UUID(int=rng.getrandbits(128), version=4),
            customer_id=customer,
            store_id=f"store-{rng.randrange(40):02d}",
            order_id=f"WEB-{number:07d}",
            currency="MYR",
            total_minor=sum(line.quantity * line.unit_price_minor for line in lines),
            lines=lines,
            channel=rng.choice(["pos", "pos", "web"]),
            purchased_at=now - timedelta(minutes=rng.randrange(60 * 24 * 30)),
        )
        envelope = event.to_envelope(source=SOURCE)
        messages.append(
            OutgoingMessage(event.topic, str(customer), envelope.model_dump_json().encode())
        )
    return messages


# ---------------------------------------------------------------------------- consumer


async def configure_programme(engine: Any) -> None:
    """Save `PROGRAMME` (the loyalty schema is migrated)."""
    async with engine.begin() as connection:
        for statement in PROGRAMME:
            await connection.execute(text(statement), {"rules": json.dumps(PROGRAMME_RULES)})


def scenario_settings(
    url: str, transport: TransportName, partitions: int, bootstrap: str | None, options: Options
) -> Settings:
    """Production defaults, except what the scenario sets; no `.env` is read."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=url,
        transport=transport,
        kafka_bootstrap_servers=bootstrap or "unused:9092",
        kafka_partitions=partitions,
        eventlog_partitions=partitions,
        kafka_session_timeout_ms=options.kafka_session_timeout_ms,
        kafka_heartbeat_interval_ms=300,
        jwt_secret=SECRET,  # type: ignore[arg-type]
        consumer_batch_size=options.batch_size,
    )


class StatementCounter:
    """Counts statements the engine sends, by their normalised text (for `--profile`)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.enabled = False

    def __call__(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if self.enabled:
            self.counts[re.sub(r"\s+", " ", statement)[:110]] += 1


async def run_consumer_scenario(
    server: EmbeddedServer,
    transport: TransportName,
    partitions: int,
    options: Options,
    messages: Sequence[OutgoingMessage],
    pgbench_tps: float,
    profiler: cProfile.Profile | None,
) -> tuple[ConsumerOutcome, Counter[str]]:
    outcome = ConsumerOutcome(transport, partitions, len(messages))
    statements = StatementCounter()
    broker = None
    if transport == "kafka":
        try:
            broker = start_broker()
        except BrokerUnavailable as exc:
            outcome.note = f"skipped: {exc}"
            return outcome, statements.counts
    database = f"bench_loyalty_{transport}_{partitions}p"
    url = await server.create_database(database)
    settings = scenario_settings(
        url, transport, partitions, broker.bootstrap if broker else None, options
    )
    runtime = Runtime(settings, [SERVICE])
    runners: list[ConsumerRunner] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        await runtime.start()  # migrates loyalty (and crm_events), creates Kafka topics
        assert runtime.transport is not None
        engine = runtime.engine(SERVICE.name)
        if not options.bare:
            await configure_programme(engine)
        began = time.monotonic()
        for start in range(0, len(messages), PUBLISH_CHUNK):
            await runtime.transport.publish(messages[start : start + PUBLISH_CHUNK])
        outcome.publish_seconds = time.monotonic() - began

        group = SERVICE.consumer_group(settings)
        assert group is not None
        runners = [
            ConsumerRunner(
                group,
                runtime.transport.subscribe(group.name, group.topics),
                runtime.sessions(SERVICE.name),
                batch_size=settings.consumer_batch_size,
                max_attempts=settings.consumer_max_attempts,
                retry_backoff=settings.consumer_retry_backoff_seconds,
                poll_interval=settings.consumer_poll_interval_seconds,
            )
            for _ in range(partitions)
        ]
        orm_event.listen(engine.sync_engine, "before_cursor_execute", statements)
        statements.enabled = profiler is not None
        window = CpuWindow(server, broker)
        started = time.monotonic()
        if profiler is not None:
            profiler.enable()
        tasks = [asyncio.create_task(runner.run()) for runner in runners]
        applied, finished_wall = await wait_applied(engine, len(messages), options.drain_limit)
        if profiler is not None:
            profiler.disable()
        statements.enabled = False
        outcome.cpu = window.close()
        outcome.applied = applied
        async with engine.connect() as connection:
            first_created = (
                await connection.execute(text("SELECT min(created_at) FROM loyalty.purchases"))
            ).scalar_one()
            outcome.points = int(
                (
                    await connection.execute(
                        text("SELECT coalesce(sum(points), 0) FROM loyalty.purchases")
                    )
                ).scalar_one()
            )
            earned = (
                await connection.execute(
                    text("SELECT coalesce(sum(points), 0) FROM loyalty.ledger WHERE kind = 'earn'")
                )
            ).scalar_one()
            balances = (
                await connection.execute(
                    text("SELECT coalesce(sum(balance), 0) FROM loyalty.members")
                )
            ).scalar_one()
        outcome.ledger_ok = int(earned) == outcome.points == int(balances)
        if first_created is not None and applied:
            outcome.drain_seconds = finished_wall - first_created.timestamp()
            outcome.join_seconds = first_created.timestamp() - (
                time.time() - (time.monotonic() - started)
            )
            outcome.per_second = applied / outcome.drain_seconds
            outcome.vs_pgbench = outcome.per_second / pgbench_tps
        if applied < len(messages):
            outcome.note = f"partial: {applied:,} of {len(messages):,} by the time limit"
        if applied:
            outcome.statements_per_purchase = sum(statements.counts.values()) / applied
        outcome.by_partition = await applied_by_partition(runtime, transport, partitions)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        outcome.note = f"failed: {exc!r}"[:200]
    finally:
        if profiler is not None:
            profiler.disable()
        for runner in runners:
            runner.stop()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=15)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await runtime.stop()
        await server.drop_database(database)
        if broker is not None:
            broker.stop()
    return outcome, statements.counts


async def wait_applied(engine: Any, total: int, limit: float) -> tuple[int, float]:
    """Poll `loyalty.purchases` until `total` rows, or `limit` s after the consumers started
    (but at least until the first batch is visible).

    Returns the count at its last change and the wall-clock time that change was seen: a
    batch commits as one transaction, so the count moves in steps of up to a batch.
    """
    last_count, last_change = -1, time.monotonic()
    last_wall = time.time()
    deadline = last_change + limit
    async with engine.connect() as connection:
        while True:
            count = int(
                (
                    await connection.execute(text("SELECT count(*) FROM loyalty.purchases"))
                ).scalar_one()
            )
            await connection.commit()
            now = time.monotonic()
            if count != last_count:
                last_count, last_change, last_wall = count, now, time.time()
            if count >= total or (count and now > deadline):
                return count, last_wall
            if now - last_change > STALL_SECONDS:
                return count, last_wall
            await asyncio.sleep(0.02)


async def applied_by_partition(runtime: Runtime, transport: str, partitions: int) -> list[int]:
    """How many records each partition held (postgres: from the log's heads)."""
    if transport != "postgres":
        return []
    async with runtime.engine(SERVICE.name).connect() as connection:
        rows = (
            await connection.execute(
                text(
                    "SELECT partition, next_offset FROM crm_events.partition_heads "
                    "WHERE topic = 'crm.purchases' ORDER BY partition"
                )
            )
        ).all()
    return [int(offset) for _, offset in rows]


# ---------------------------------------------------------------------------- HTTP


async def run_http(server: EmbeddedServer, options: Options) -> list[LatencyResult]:
    database = "bench_loyalty_http"
    url = await server.create_database(database)
    settings_kwargs = {
        "database_url": url,
        "transport": "postgres",
        "eventlog_partitions": 4,
        "jwt_secret": SECRET,
    }
    settings = Settings(_env_file=None, **settings_kwargs)  # type: ignore[call-arg, arg-type]
    token = issue_token(settings, subject="bench-till", scopes=[Scope.POS], store_id="kl-01")
    headers = {"Authorization": f"Bearer {token}"}
    customers = make_customers(options.http_customers, seed=11)
    rng = random.Random(5)
    bodies = [
        purchase_body(index, rng.choice(customers), random_lines(rng))
        for index in range(options.requests)
    ]
    app = ServerProcess(settings_kwargs)
    results = []
    try:
        await app.start()
        if not options.bare:
            engine = create_engine(url, pool_size=1)
            try:
                await configure_programme(engine)
            finally:
                await engine.dispose()

        async def post(client: Any, index: int) -> Any:
            return await client.post("/v1/loyalty/purchases", json=bodies[index])

        async def get(client: Any, index: int) -> Any:
            # Customers the POSTs created (all of them when the POST phase was cut short).
            customer = bodies[index % max(1, posted)]["customer"]["id"]
            return await client.get(f"/v1/loyalty/members/{customer}")

        results.append(
            await load(
                app.base_url,
                headers,
                "POST /v1/loyalty/purchases",
                options.requests,
                options.clients,
                options.http_limit,
                post,
                [201],
            )
        )
        posted = results[0].requests
        results.append(
            await load(
                app.base_url,
                headers,
                "GET /v1/loyalty/members/{id}",
                options.requests,
                options.clients,
                options.http_limit,
                get,
                [200],
            )
        )
    finally:
        app.stop()
        await server.drop_database(database)
    return results


# ---------------------------------------------------------------------------- report


def _n(value: float, digits: int = 0) -> str:
    return "-" if value != value else f"{value:,.{digits}f}"


def render_consumers(outcomes: Sequence[ConsumerOutcome], pgbench_tps: float) -> str:
    header = (
        f"{'transport':<9} {'parts':>5} {'applied':>8} {'join s':>6} {'drain s':>7} "
        f"{'purch/s':>8} {'x pgbench':>9} {'ledger':>6} {'cpu% py/pg/broker/other':>24} "
        "per partition / note"
    )
    lines = [header, "-" * len(header)]
    for o in outcomes:
        cpu = (
            f"{o.cpu.pipeline:.0f}/{o.cpu.postgres:.0f}/{o.cpu.broker:.0f}/{o.cpu.other:.0f}"
            if o.cpu
            else "-"
        )
        tail = "/".join(str(n) for n in o.by_partition)
        tail = f"{tail} {o.note}".strip() or "-"
        lines.append(
            f"{o.transport:<9} {o.partitions:>5} {o.applied:>8,} {_n(o.join_seconds, 1):>6} "
            f"{_n(o.drain_seconds, 2):>7} {_n(o.per_second):>8} {_n(o.vs_pgbench, 2):>9} "
            f"{'ok' if o.ledger_ok else 'NO':>6} {cpu:>24} {tail}"
        )
    best = max((o.per_second for o in outcomes if o.per_second == o.per_second), default=0.0)
    verdict = "reached" if best >= pgbench_tps else "NOT reached"
    lines.append(
        f"Goal (consumer purchases/s >= pgbench TPS {pgbench_tps:,.0f}): {verdict}; "
        f"best {best:,.0f}/s"
    )
    return "\n".join(lines)


def render_http(results: Sequence[LatencyResult]) -> str:
    header = (
        f"{'endpoint':<30} {'reqs':>6} {'clients':>7} {'req/s':>7} {'p50 ms':>7} "
        f"{'p90 ms':>7} {'p99 ms':>7} {'max ms':>7} {'failed':>6} statuses"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(
            f"{r.endpoint:<30} {r.requests:>6,} {r.clients:>7} {_n(r.per_second):>7} "
            f"{_n(r.p50_ms, 1):>7} {_n(r.p90_ms, 1):>7} {_n(r.p99_ms, 1):>7} "
            f"{_n(r.max_ms, 1):>7} {r.failures:>6} {r.statuses}"
        )
    return "\n".join(lines)


def render_profile(profiler: cProfile.Profile, statements: Counter[str], applied: int) -> str:
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream)
    stats.sort_stats("tottime").print_stats(40)
    stats.sort_stats("cumulative").print_stats("services/loyalty|consumer.py|outbox.py", 24)
    text_ = re.sub(r"/\S*/(site-packages|main)/", "", stream.getvalue())
    body = "\n".join(line for line in text_.splitlines() if line.strip())
    total = sum(statements.values())
    lines = [
        f"SQL statements sent while draining: {total:,} for {applied:,} applied purchases "
        f"({total / max(1, applied):.2f} per purchase); most frequent:"
    ]
    for statement, count in statements.most_common(16):
        lines.append(f"  {count:>7,}  {statement}")
    return body + "\n\n" + "\n".join(lines)


# ---------------------------------------------------------------------------- main


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.loyalty",
        description="Loyalty consumer purchases/s vs pgbench TPS, and HTTP latency.",
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="a smoke test of under a minute")
    add("--purchases", type=int, help="purchase events per scenario (20000; quick 1000)")
    add("--customers", type=int, help="customers they spread over (2000; quick 500)")
    add("--transports", nargs="+", choices=["postgres", "kafka"], default=["postgres", "kafka"])
    add("--partitions", nargs="+", type=int, default=[1, 4])
    add("--requests", type=int, help="requests per HTTP endpoint (2000; quick 400); 0 skips")
    add(
        "--batch-size",
        type=int,
        help="consumer batch size (production default 500; quick 100, so a batch fits)",
    )
    add("--clients", type=int, default=32, help="concurrent HTTP clients (32)")
    add(
        "--drain-limit",
        type=float,
        help="stop waiting for a drain this many s after the consumers start (40; quick 3)",
    )
    add(
        "--http-limit",
        type=float,
        help="stop sending to an endpoint after this many s (20; quick 5)",
    )
    add("--http-customers", type=int, default=500, help="customers the HTTP load uses (500)")
    add("--pgbench-scale", type=int, default=10)
    add("--pgbench-seconds", type=int, help="pgbench -T (10; quick 3)")
    add("--pgbench-clients", type=int, default=4)
    add("--pgbench-threads", type=int, default=2)
    add(
        "--profile",
        action="store_true",
        help="cProfile the consumer and count its SQL in the first scenario",
    )
    add(
        "--bare",
        action="store_true",
        help="no earning rules, tiers or stamp cards (the defaults: 1 point per ringgit)",
    )
    add("--json", type=Path, dest="json_path", help="also write the raw results to this file")
    args = parser.parse_args(argv)
    quick: bool = args.quick
    return Options(
        purchases=args.purchases or (1000 if quick else 20000),
        customers=args.customers or (500 if quick else 2000),
        transports=args.transports,
        partitions=args.partitions,
        requests=args.requests if args.requests is not None else (400 if quick else 2000),
        clients=args.clients,
        http_customers=args.http_customers,
        pgbench_scale=args.pgbench_scale,
        pgbench_seconds=args.pgbench_seconds or (3 if quick else 10),
        pgbench_clients=args.pgbench_clients,
        pgbench_threads=args.pgbench_threads,
        kafka_session_timeout_ms=2000 if quick else 6000,
        drain_limit=args.drain_limit or (3.0 if quick else 40.0),
        http_limit=args.http_limit or (5.0 if quick else 20.0),
        batch_size=args.batch_size
        or (100 if quick else Settings.model_fields["consumer_batch_size"].default),
        profile=args.profile,
        json_path=args.json_path,
        bare=args.bare,
    )


async def run(options: Options) -> dict[str, Any]:
    server = EmbeddedServer()
    outcomes: list[ConsumerOutcome] = []
    http: list[LatencyResult] = []
    profile_text = ""
    try:
        server_settings = await server.describe()
        pgbench = await run_pgbench(
            server,
            scale=options.pgbench_scale,
            clients=options.pgbench_clients,
            threads=options.pgbench_threads,
            seconds=options.pgbench_seconds,
        )
        print(f"pgbench: {pgbench.tps:,.0f} TPS", file=sys.stderr, flush=True)
        customers = make_customers(options.customers, seed=3)
        messages = purchase_messages(options.purchases, customers)
        for transport in options.transports:
            for partitions in options.partitions:
                began = time.monotonic()
                profiler = cProfile.Profile() if options.profile and not outcomes else None
                outcome, statements = await run_consumer_scenario(
                    server, transport, partitions, options, messages, pgbench.tps, profiler
                )
                outcomes.append(outcome)
                if profiler is not None:
                    profile_text = render_profile(profiler, statements, outcome.applied)
                took = time.monotonic() - began
                print(
                    f"{transport} {partitions}p: {outcome.per_second:,.0f}/s, {took:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
        if options.requests > 0:
            http = await run_http(server, options)
    finally:
        server.stop()
    settings = ", ".join(f"{k}={v}" for k, v in server_settings.items())
    print("Loyalty benchmark: purchase.completed events applied by the loyalty consumer")
    print(f"server: {settings}; cpus={os.cpu_count()}")
    print(
        f"pgbench {pgbench.command}: {pgbench.tps:,.0f} TPS (cpu%: postgres "
        f"{pgbench.cpu.postgres:.0f}, other processes {pgbench.cpu.other:.0f})"
    )
    print(
        f"\nConsumer: {options.purchases:,} purchases over {options.customers:,} customers "
        "pre-published on crm.purchases, then one consumer per partition starts "
        f"(batch size {options.batch_size}, drain limit {options.drain_limit:g} s); "
        "drain s = first purchase row created -> last visible; join s = consumer start -> "
        "first purchase row; per partition = records on each partition of crm.purchases "
        "(postgres log heads); "
        + (
            "no programme configured (--bare)"
            if options.bare
            else "programme: rules with category multipliers and caps, two tiers, a stamp card"
        )
    )
    print(render_consumers(outcomes, pgbench.tps))
    if http:
        print(
            f"\nHTTP: real uvicorn server (child process, app with run_workers=True), "
            f"{options.clients} concurrent httpx clients, {options.http_customers} customers; "
            "POSTs first, then GETs of the same customers"
        )
        print(render_http(http))
    if profile_text:
        first = outcomes[0]
        print(f"\nProfile of the {first.transport} {first.partitions}p consumer (cProfile):")
        print(profile_text)
    return {
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
        "server": {**server_settings, "cpus": os.cpu_count()},
        "pgbench": asdict(pgbench),
        "consumers": [asdict(o) for o in outcomes],
        "http": [asdict(r) for r in http],
    }


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m bench.loyalty`."""
    configure_logging("WARNING", json=False)
    options = parse_options(argv)
    started = time.monotonic()
    raw: Any = asyncio.run(run(options))
    raw["total_seconds"] = round(time.monotonic() - started, 1)
    print("\nRaw results (JSON):")
    raw = _plain(raw)
    print(compact_json(raw))
    if options.json_path is not None:
        options.json_path.write_text(json.dumps(raw, indent=2) + "\n")


if __name__ == "__main__":
    main()
