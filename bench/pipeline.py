"""Benchmark of the event pipeline: outbox -> relay -> transport -> consumer.

Run with `python -m bench.pipeline` (`make bench`); `--quick` is a smoke test of under a
minute, `--help` lists the knobs. It prints tables, then the raw numbers as JSON.

What runs
    One embedded PostgreSQL server in a temporary folder serves everything: first pgbench
    (TPC-B-like, `-i -s 10`, then `-c 4 -j 2 -T 10`), then one scenario after another.
    A scenario is a transport (the PostgreSQL event log, or Kafka on a fresh tansu
    broker), a partition count, and a load; each gets a fresh database holding the
    `pipeline_test` schema of tests/pipeline/migrations. The relay and one consumer-group
    member per partition (`--consumers` to change that) run in this process with the
    production defaults of `Settings` (batch sizes, poll intervals). The load generator
    runs in a spawned process (bench/producer.py), so its CPU is not charged to the
    pipeline; it writes through the real `add_event`, as services do.

Loads
    saturation: `--producers` writers commit transactions of `--per-transaction` events
        back to back until `--events` are written, while the pipeline runs.
    steady: transactions of `--steady-per-transaction` events, scheduled open-loop at
        `--rate` events/s for `--seconds`.
    drain: `--events` are put in the outbox with the relay stopped, then the relay starts:
        the capacity of relay -> transport -> consumer alone, without the load generator
        competing for the same cores (on a small machine it otherwise sets the pace).

What is measured
    Outbox commit time: read right after the producer's COMMIT returned; every event of
    the transaction gets that time. Handler commit time: the bench handler (the test
    handler's row in `pipeline_test.applied` per event, written by a batch handler with one
    statement per run by default, one statement per event with `--handler insert`, or
    nothing with `--handler noop`)
    notes the event id in the session, and an SQLAlchemy `after_commit` listener reads
    the clock right after the consumer's COMMIT returned, i.e. once the handler's effect
    and its inbox row are durable and visible. Both are `time.monotonic()`, which on
    Linux is one clock for the whole machine, so readings from two processes subtract.
    The `applied_at` column is not used: its `now()` is the consumer transaction's start,
    before the handler ran, and would under-state latency by the length of the batch.
    For Kafka, the offset commit after the handler commit is not included: the effect is
    there without it (a redelivery would be skipped by the inbox).

    Throughput = events applied / (last handler commit - first outbox commit), or - relay
    start when draining. Latency = handler commit - outbox commit per event (median, p99,
    max), split at the moment the transport acknowledged the event to the relay. The
    `produced/relayed/applied` columns are when the last event passed each stage: where
    they drift apart, a queue built up. `applied by member` shows how the group shared
    the work. CPU is in % of one core (the machine has `cpus` of them) over the measured
    window: this process (relay and consumers), PostgreSQL (all backends, exited ones
    included), the tansu broker, the load generator, and `other`: whatever else kept the
    machine busy meanwhile. A large `other` means someone else's load was competing and
    the numbers of that row are noisy; run again on a quiet machine.
    The issue's goals: throughput >= 2 x pgbench TPS; p99 < 100 ms at a steady 1,000/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from bench.infra import SETTLE_SECONDS, CpuWindow, EmbeddedServer, run_pgbench
from bench.probes import (
    APPLY_PINGS,
    Probe,
    ProbedSession,
    TimedTransport,
    apply_ping,
    percentile,
)
from bench.producer import SOURCE, LoadPlan, run_load, warm_up
from bench.report import Outcome, render
from shared.db.engine import create_engine, session_factory
from shared.db.migrations import migrate
from shared.events.envelope import Event
from shared.events.platform import DEAD_LETTER_TOPIC
from shared.logging import configure_logging
from shared.pipeline.consumer import ConsumerGroup, ConsumerRunner, Handler
from shared.pipeline.outbox import add_event
from shared.pipeline.relay import Relay
from shared.pipeline.tables import platform_tables
from shared.pipeline.transports.kafka import KafkaTransport
from shared.pipeline.transports.postgres import PostgresTransport
from shared.settings import Settings
from tests.pipeline.harness import MIGRATIONS, SCHEMA, TEST_EVENTS, TOPIC, PingRecorded
from tests.support.broker import Broker, BrokerUnavailable, start_broker

TransportName = Literal["postgres", "kafka"]
LoadName = Literal["saturation", "steady", "drain"]
LOADS: tuple[LoadName, ...] = ("saturation", "steady", "drain")
GROUP = "bench"
STALL_SECONDS = 30.0
"""Give up on a scenario when no event has been applied for this long."""


@dataclass(frozen=True)
class Options:
    """The resolved command line."""

    events: int
    seconds: float
    rate: int
    producers: int
    per_transaction: int
    steady_per_transaction: int
    transports: list[TransportName]
    partitions: list[int]
    loads: list[LoadName]
    consumers: int | None
    handler: Literal["batch", "insert", "noop"]
    pgbench_scale: int
    pgbench_seconds: int
    pgbench_clients: int
    pgbench_threads: int
    kafka_session_timeout_ms: int
    json_path: Path | None


@dataclass(frozen=True)
class Scenario:
    """One measured run: a transport, its partitions and group members, and a load."""

    transport: TransportName
    partitions: int
    consumers: int
    load: LoadName

    @property
    def database(self) -> str:
        return f"bench_{self.transport}_{self.partitions}p_{self.load}"


@dataclass
class Stack:
    """The running pipeline of one scenario: transport, relay, consumers, their tasks."""

    engine: AsyncEngine
    settings: Settings
    transport: TimedTransport
    probe: Probe
    runners: list[ConsumerRunner]
    relay: Relay | None = None
    relay_task: asyncio.Task[None] | None = None
    runner_tasks: list[asyncio.Task[None]] | None = None

    def start_relay(self) -> None:
        """A new relay with the production settings, running from now."""
        self.relay = Relay(
            self.engine,
            SCHEMA,
            self.transport,
            batch_size=self.settings.relay_batch_size,
            poll_interval=self.settings.relay_poll_interval_seconds,
        )
        self.relay_task = asyncio.create_task(self.relay.run())

    async def stop_relay(self) -> None:
        """Let the relay finish its batch and return."""
        if self.relay is not None and self.relay_task is not None:
            self.relay.stop()
            await self.relay_task
        self.relay = self.relay_task = None

    async def stop(self) -> None:
        """Stop everything; cancel what does not stop within 15 s."""
        workers: list[Relay | ConsumerRunner] = [*self.runners]
        if self.relay is not None:
            workers.append(self.relay)
        for worker in workers:
            worker.stop()
        tasks = [t for t in [self.relay_task, *(self.runner_tasks or [])] if t is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=15)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.transport.stop()


def bench_settings(
    url: str, scenario: Scenario, bootstrap: str | None, session_timeout_ms: int
) -> Settings:
    """Production defaults, except what the scenario sets; no `.env` is read."""
    return Settings(
        _env_file=None,
        database_url=url,
        transport=scenario.transport,
        kafka_bootstrap_servers=bootstrap or "unused:9092",
        kafka_partitions=scenario.partitions,
        eventlog_partitions=scenario.partitions,
        # tansu completes a group join after about half the session timeout, so shorter
        # than the default makes scenarios start sooner; the heartbeat keeps up with it.
        kafka_session_timeout_ms=session_timeout_ms,
        kafka_heartbeat_interval_ms=300,
    )


async def build_stack(
    engine: AsyncEngine, scenario: Scenario, options: Options, bootstrap: str | None
) -> Stack:
    """Migrate, connect the transport and start the relay and the group's members."""
    await migrate(engine, SCHEMA, MIGRATIONS)
    settings = bench_settings(
        str(engine.url), scenario, bootstrap, options.kafka_session_timeout_ms
    )
    transport = TimedTransport(
        KafkaTransport(settings, [TOPIC, DEAD_LETTER_TOPIC])
        if bootstrap
        else PostgresTransport(engine, scenario.partitions)
    )
    await transport.start()
    probe = Probe()
    handlers: dict[type[Event], Handler] = {
        PingRecorded: APPLY_PINGS if options.handler == "batch" else apply_ping
    }
    group = ConsumerGroup(GROUP, SCHEMA, SOURCE, handlers, TEST_EVENTS)
    runners = [
        ConsumerRunner(
            group,
            transport.subscribe(group.name, group.topics),
            async_sessionmaker(
                engine,
                sync_session_class=ProbedSession,
                expire_on_commit=False,
                info={
                    "group": GROUP,
                    "probe": probe,
                    "member": member,
                    "work": options.handler != "noop",
                },
            ),
            batch_size=settings.consumer_batch_size,
            max_attempts=settings.consumer_max_attempts,
            retry_backoff=settings.consumer_retry_backoff_seconds,
            poll_interval=settings.consumer_poll_interval_seconds,
        )
        for member in range(scenario.consumers)
    ]
    stack = Stack(engine, settings, transport, probe, runners)
    stack.runner_tasks = [asyncio.create_task(runner.run()) for runner in runners]
    stack.start_relay()
    return stack


async def run_scenario(
    server: EmbeddedServer, scenario: Scenario, options: Options, pool: ProcessPoolExecutor
) -> Outcome:
    """Set up, warm up, measure and tear down one scenario on a fresh database."""
    outcome = Outcome(scenario.transport, scenario.partitions, scenario.consumers, scenario.load)
    broker = None
    if scenario.transport == "kafka":
        try:
            broker = start_broker()
        except BrokerUnavailable as exc:
            outcome.note = f"skipped: {exc}"
            return outcome
    url = await server.create_database(scenario.database)
    engine = create_engine(url, pool_size=scenario.consumers * 2 + 4)
    stack: Stack | None = None
    try:
        stack = await build_stack(engine, scenario, options, broker.bootstrap if broker else None)
        await warm_up_pipeline(stack, scenario)
        stack.probe.reset()
        stack.transport.reset()
        if scenario.load == "drain":
            await measure_drain(server, broker, options, stack, outcome)
        else:
            await measure_load(server, broker, scenario, options, pool, url, stack, outcome)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        outcome.note = f"failed: {exc!r}"[:200]
    finally:
        if stack is not None:
            await stack.stop()
        await engine.dispose()
        await server.drop_database(scenario.database)
        if broker is not None:
            broker.stop()
    return outcome


async def warm_up_pipeline(stack: Stack, scenario: Scenario) -> None:
    """Wait for the group to form and one round of events to go through, untimed.

    Kafka assigns partitions only once every member joined, and the first fetches pay for
    metadata and connections; none of that belongs in the numbers.
    """
    deadline = time.monotonic() + 60
    if scenario.transport == "kafka":
        while not _kafka_group_ready(stack.runners, scenario.partitions):
            if time.monotonic() > deadline:
                raise TimeoutError("the Kafka consumer group did not form within 60 s")
            await asyncio.sleep(0.1)
    count = 20 * scenario.partitions
    async with session_factory(stack.engine)() as session, session.begin():
        for number in range(count):
            ping = PingRecorded(entity=f"warm-{number}", seq=0)
            await add_event(session, SCHEMA, ping, source=SOURCE)
    if not await stack.probe.wait_for(count, stall=60):
        raise TimeoutError("warm-up events were not applied within 60 s")


def _kafka_group_ready(runners: Sequence[ConsumerRunner], partitions: int) -> bool:
    # Peeks at the aiokafka consumer inside the subscription: the Subscription interface
    # does not tell when the group has finished rebalancing, and the bench must know.
    assigned: set[Any] = set()
    for runner in runners:
        consumer: Any = getattr(runner.subscription, "_consumer", None)
        if consumer is None:
            return False
        mine = consumer.assignment()
        if not mine and len(runners) <= partitions:
            return False
        assigned |= set(mine)
    return len(assigned) >= partitions


async def measure_load(
    server: EmbeddedServer,
    broker: Broker | None,
    scenario: Scenario,
    options: Options,
    pool: ProcessPoolExecutor,
    url: str,
    stack: Stack,
    outcome: Outcome,
) -> None:
    """Run the load in the producer process and wait for every event to be applied."""
    if scenario.load == "saturation":
        per = options.per_transaction
        plan = LoadPlan(url, max(1, options.events // per), per, options.producers, None)
    else:
        per = options.steady_per_transaction
        transactions = max(1, round(options.rate * options.seconds / per))
        # Four writers, so that one slow commit does not hold up the schedule.
        plan = LoadPlan(url, transactions, per, 4, per / options.rate)
    outcome.planned = plan.transactions * plan.per_transaction
    window = CpuWindow(server, broker)
    report = await asyncio.get_running_loop().run_in_executor(pool, run_load, plan)
    complete = await stack.probe.wait_for(outcome.planned, STALL_SECONDS)
    await asyncio.sleep(SETTLE_SECONDS)  # the load generator's backends have just gone
    outcome.cpu = window.close(producer_seconds=report.cpu_seconds)
    committed = dict(zip(report.event_ids, report.committed_at, strict=True))
    summarize(outcome, committed, stack, complete, latency=True)


async def measure_drain(
    server: EmbeddedServer,
    broker: Broker | None,
    options: Options,
    stack: Stack,
    outcome: Outcome,
) -> None:
    """Fill the outbox with the relay stopped, then time relay and consumers emptying it."""
    await stack.stop_relay()
    rows: list[dict[str, Any]] = []
    for number in range(options.events):
        ping = PingRecorded(entity=f"drain-s{number % 1000}", seq=number)
        envelope = ping.to_envelope(source=SOURCE)
        rows.append(
            {
                "event_id": envelope.id,
                "topic": ping.topic,
                "key": envelope.subject,
                "event_type": envelope.type,
                "payload": envelope.model_dump_json(),
            }
        )
    # The rows add_event would write, in one bulk statement: filling is not measured.
    async with session_factory(stack.engine)() as session, session.begin():
        await session.execute(insert(platform_tables(SCHEMA).outbox), rows)
    outcome.planned = len(rows)
    window = CpuWindow(server, broker)
    started = time.monotonic()
    stack.start_relay()
    complete = await stack.probe.wait_for(outcome.planned, STALL_SECONDS)
    outcome.cpu = window.close()
    committed = {row["event_id"].hex: started for row in rows}
    summarize(outcome, committed, stack, complete, latency=False)


def summarize(
    outcome: Outcome,
    committed: Mapping[str, float],
    stack: Stack,
    complete: bool,
    *,
    latency: bool,
) -> None:
    """Throughput, stage ends and (when `latency`) latency percentiles from the taps."""
    probe, acked = stack.probe, stack.transport.acked
    if not complete:
        outcome.note = f"stalled: nothing applied for {STALL_SECONDS:.0f} s"
    outcome.applied_by_member = [probe.by_member[m] for m in range(len(stack.runners))]
    done = {event_id: at for event_id, at in committed.items() if event_id in probe.applied}
    outcome.applied = len(done)
    if not done:
        return
    first, last_commit = min(committed.values()), max(committed.values())
    last_applied = max(probe.applied[event_id] for event_id in done)
    outcome.events_per_second = len(done) / (last_applied - first)
    outcome.relay_done = stack.transport.last_ack - first
    outcome.consumer_done = last_applied - first
    if not latency:
        return
    outcome.producer_done = last_commit - first
    if last_commit > first:
        outcome.offered_per_second = len(committed) / (last_commit - first)
    total = sorted(probe.applied[event_id] - at for event_id, at in done.items())
    relayed = sorted(acked[event_id] - at for event_id, at in done.items() if event_id in acked)
    consumed = sorted(
        probe.applied[event_id] - acked[event_id] for event_id in done if event_id in acked
    )
    outcome.p50_ms = 1000 * percentile(total, 0.50)
    outcome.p99_ms = 1000 * percentile(total, 0.99)
    outcome.max_ms = 1000 * total[-1]
    outcome.relay_p50_ms = 1000 * percentile(relayed, 0.50)
    outcome.relay_p99_ms = 1000 * percentile(relayed, 0.99)
    outcome.consume_p50_ms = 1000 * percentile(consumed, 0.50)
    outcome.consume_p99_ms = 1000 * percentile(consumed, 0.99)


def parse_options(argv: Sequence[str] | None = None) -> Options:
    """The command line; `--quick` changes the defaults of the sizes not given."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.pipeline",
        description="Throughput and latency of the event pipeline, next to pgbench TPS.",
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="a smoke test of under a minute")
    add("--events", type=int, help="events per saturation and drain run (20000; quick 3000)")
    add("--seconds", type=float, help="length of the steady run (5; quick 2)")
    add("--rate", type=int, default=1000, help="steady offered load, events/s (1000)")
    add("--producers", type=int, default=4, help="writers at saturation (4)")
    add("--per-transaction", type=int, default=100, help="events per transaction at saturation")
    add("--steady-per-transaction", type=int, default=10, help="events per steady transaction")
    add("--transports", nargs="+", choices=["postgres", "kafka"], default=["postgres", "kafka"])
    add("--partitions", nargs="+", type=int, default=[1, 4])
    add("--loads", nargs="+", choices=LOADS, default=list(LOADS))
    add("--consumers", type=int, help="group members per scenario (default: one per partition)")
    add(
        "--handler",
        choices=["batch", "insert", "noop"],
        default="batch",
        help="batch: the test handler's row per event, one statement per run (default);"
        " insert: one statement per event; noop: pipeline only",
    )
    add("--pgbench-scale", type=int, default=10)
    add("--pgbench-seconds", type=int, help="pgbench -T (10; quick 3)")
    add("--pgbench-clients", type=int, default=4)
    add("--pgbench-threads", type=int, default=2)
    add("--json", type=Path, dest="json_path", help="also write the raw results to this file")
    args = parser.parse_args(argv)
    quick: bool = args.quick
    return Options(
        events=args.events or (3000 if quick else 20000),
        seconds=args.seconds or (2.0 if quick else 5.0),
        rate=args.rate,
        producers=args.producers,
        per_transaction=args.per_transaction,
        steady_per_transaction=args.steady_per_transaction,
        transports=args.transports,
        partitions=args.partitions,
        loads=args.loads,
        consumers=args.consumers,
        handler=args.handler,
        pgbench_scale=args.pgbench_scale,
        pgbench_seconds=args.pgbench_seconds or (3 if quick else 10),
        pgbench_clients=args.pgbench_clients,
        pgbench_threads=args.pgbench_threads,
        # Quick mode joins in ~1 s instead of ~3 s; a longer timeout is safer for numbers
        # that count, as a busy event loop then cannot cost the member its partitions.
        kafka_session_timeout_ms=2000 if quick else 6000,
        json_path=args.json_path,
    )


async def run(options: Options) -> dict[str, Any]:
    """Everything in order (server, pgbench, each scenario); prints the tables."""
    scenarios = [
        Scenario(transport, partitions, options.consumers or partitions, load)
        for transport in options.transports
        for partitions in options.partitions
        for load in options.loads
    ]
    server = EmbeddedServer()
    pool = ProcessPoolExecutor(1, mp_context=get_context("spawn"))
    try:
        spawned = asyncio.get_running_loop().run_in_executor(pool, warm_up)
        server_settings = await server.describe()
        pgbench = await run_pgbench(
            server,
            scale=options.pgbench_scale,
            clients=options.pgbench_clients,
            threads=options.pgbench_threads,
            seconds=options.pgbench_seconds,
        )
        await spawned
        outcomes = []
        for scenario in scenarios:
            began = time.monotonic()
            outcomes.append(await run_scenario(server, scenario, options, pool))
            took = time.monotonic() - began
            print(f"{scenario}: {took:.1f} s", file=sys.stderr, flush=True)
    finally:
        pool.shutdown()
        server.stop()
    settings = ", ".join(f"{k}={v}" for k, v in server_settings.items())
    headline = [
        "Event pipeline benchmark: outbox -> relay -> transport -> consumer handler commit",
        f"server: {settings}; cpus={os.cpu_count()}; handler={options.handler}",
        f"pgbench {pgbench.command}: {pgbench.tps:,.0f} TPS (cpu%: postgres "
        f"{pgbench.cpu.postgres:.0f}, other processes {pgbench.cpu.other:.0f}, steal "
        f"{pgbench.cpu.steal:.0f})",
    ]
    stages = "produced/relayed/applied: s after the start when the last event passed the stage"
    titles = {
        "saturation": f"Saturation: {options.producers} writers x {options.per_transaction} "
        f"events per transaction, {options.events:,} events; {stages}",
        "steady": f"Steady: {options.rate:,} events/s offered for {options.seconds:g} s, "
        f"{options.steady_per_transaction} events per transaction; latency in ms",
        "drain": f"Drain: {options.events:,} events waiting in the outbox, then the relay "
        f"starts; {stages}",
    }
    print(render(headline, titles, outcomes, pgbench.cpu.other, pgbench.tps, options.rate))
    return {
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
        "server": {**server_settings, "cpus": os.cpu_count()},
        "pgbench": asdict(pgbench),
        "scenarios": [asdict(o) for o in outcomes],
    }


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m bench.pipeline`."""
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


def _plain(value: Any) -> Any:
    """Strict JSON values: NaN (not measured) becomes null, floats keep three decimals."""
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 3)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def compact_json(raw: Mapping[str, Any]) -> str:
    """Valid JSON with one line per top-level entry and per scenario, to keep logs short."""
    lines = []
    for key, value in raw.items():
        if isinstance(value, list):
            items = ",\n".join(f"    {json.dumps(item)}" for item in value)
            lines.append(f"  {json.dumps(key)}: [\n{items}\n  ]")
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(lines) + "\n}"


if __name__ == "__main__":
    main()
