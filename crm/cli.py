"""`crm`: run the system, one service, its workers; migrate; issue tokens; print schemas.

Configuration comes from `CRM_` environment variables (see the README); the commands
only choose what to run.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from crm.services import ALL_SERVICES, by_name
from services.scoring.cli import app as scoring_app
from shared.auth import Scope, issue_token, signing_key
from shared.events import EVENTS
from shared.events.platform import DEAD_LETTER_TOPIC
from shared.events.schema import render
from shared.http.app import create_app
from shared.logging import configure_logging
from shared.pipeline.dead_letters import DeadLetter, replay_matching
from shared.pipeline.topics import TopicReport, ensure_eventlog_topics, ensure_kafka_topics
from shared.probe_server import start_probe_server
from shared.runtime import Runtime
from shared.service import ServiceDefinition
from shared.settings import Settings

app = typer.Typer(
    help="Customer retention backend: services, workers and tools.", no_args_is_help=True
)
token_app = typer.Typer(help="Bearer tokens.", no_args_is_help=True)
events_app = typer.Typer(help="The event contract.", no_args_is_help=True)
app.add_typer(token_app, name="token")
topics_app = typer.Typer(help="Broker topics.", no_args_is_help=True)
app.add_typer(events_app, name="events")
app.add_typer(topics_app, name="topics")
app.add_typer(scoring_app, name="scoring")

ServiceName = Annotated[
    str, typer.Argument(help="contacts, loyalty, referrals, scoring or messaging")
]


def _settings() -> Settings:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    return settings


def _service(name: str) -> ServiceDefinition:
    try:
        return by_name(name)
    except KeyError as exc:
        raise typer.BadParameter(str(exc.args[0])) from exc


def _serve(settings: Settings, services: list[ServiceDefinition], run_workers: bool) -> None:
    application = create_app(settings, services, run_workers=run_workers)
    config = uvicorn.Config(
        application,
        host=settings.host,
        port=settings.port,
        log_config=None,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
        lifespan="on",
    )
    uvicorn.Server(config).run()


@app.command()
def up() -> None:
    """Run all five services, their relays and consumers, in one process on one port."""
    settings = _settings()
    _, created = signing_key(settings)
    base = f"http://{settings.host}:{settings.port}"
    typer.echo(f"CRM listening on {base}  (health: {base}/v1/contacts/healthz, docs: {base}/docs)")
    if settings.database_url is None:
        typer.echo(f"Embedded PostgreSQL data: {Path(settings.data_dir).resolve() / 'pg'}")
    if created:
        token = issue_token(
            settings, subject="admin", scopes=[Scope.ADMIN], ttl=timedelta(days=365)
        )
        typer.echo("First start: an admin token (valid one year; `crm token issue` makes more):")
        typer.echo(f"  {token}")
    _serve(settings, list(ALL_SERVICES), run_workers=True)


@app.command()
def serve(service: ServiceName) -> None:
    """Run one service's HTTP API (its workers run separately: `crm worker`)."""
    settings = _settings()
    _serve(settings, [_service(service)], run_workers=False)


@app.command()
def worker(service: ServiceName) -> None:
    """Run one service's outbox relay, event consumers and scheduled jobs until SIGTERM.

    /healthz and /metrics are served on CRM_METRICS_PORT. SIGTERM lets the batch in hand
    commit, within CRM_SHUTDOWN_GRACE_SECONDS, then exits 0.
    """
    settings = _settings()
    asyncio.run(_run_worker(settings, _service(service)))


async def _run_worker(settings: Settings, service: ServiceDefinition) -> None:
    runtime = Runtime(settings, [service])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    probes = None
    try:
        await runtime.start()
        runtime.start_workers()
        if settings.metrics_port:
            probes = await start_probe_server(
                settings.host, settings.metrics_port, runtime.failed_workers
            )
        typer.echo(f"{service.name} worker running; SIGTERM stops it after the batch in hand")
        await stop.wait()
    finally:
        await runtime.stop()
        if probes is not None:
            probes.close()


@app.command("migrate")
def migrate_command(
    service: Annotated[str | None, typer.Argument(help="One service; all when omitted")] = None,
) -> None:
    """Apply database migrations (safe to run twice, and from several processes at once)."""
    settings = _settings()
    services = [_service(service)] if service else list(ALL_SERVICES)
    asyncio.run(_migrate(settings, services))
    typer.echo("migrated: " + ", ".join(s.name for s in services))


async def _migrate(settings: Settings, services: list[ServiceDefinition]) -> None:
    runtime = Runtime(settings, services)
    try:
        await runtime.open_databases()
        await runtime.migrate()
    finally:
        await runtime.stop()


@token_app.command("issue")
def token_issue(
    scope: Annotated[list[Scope], typer.Option("--scope", help="Repeat for several scopes")],
    subject: Annotated[str, typer.Option(help="Who the token is for")] = "operator",
    store: Annotated[str | None, typer.Option(help="The store a POS token belongs to")] = None,
    days: Annotated[float, typer.Option(help="Validity in days")] = 30.0,
) -> None:
    """Print a signed bearer token."""
    settings = Settings()
    typer.echo(
        issue_token(
            settings, subject=subject, scopes=scope, store_id=store, ttl=timedelta(days=days)
        )
    )


@events_app.command("schema")
def events_schema(
    output: Annotated[
        Path | None, typer.Option(help="Write to this file instead of stdout")
    ] = None,
) -> None:
    """Print the AsyncAPI document (with JSON Schemas) of every event type."""
    document = render(EVENTS)
    if output is None:
        typer.echo(document, nl=False)
    else:
        output.write_text(document)


@topics_app.command("ensure")
def topics_ensure() -> None:
    """Create every topic the services publish and consume, and the dead-letter topic.

    Kafka: with CRM_KAFKA_PARTITIONS, CRM_KAFKA_REPLICATION_FACTOR and
    CRM_KAFKA_RETENTION_HOURS. PostgreSQL transport: migrates the event log and fixes each topic's
    partition count (CRM_EVENTLOG_PARTITIONS). Existing topics are left as they are.
    """
    settings = _settings()
    report = asyncio.run(_ensure_topics(settings))
    for name in report.created:
        typer.echo(f"created: {name}")
    for name in report.existed:
        typer.echo(f"exists:  {name}")


async def _ensure_topics(settings: Settings) -> TopicReport:
    runtime = Runtime(settings, list(ALL_SERVICES))
    topics = sorted({*runtime.registry_topics(), DEAD_LETTER_TOPIC})
    if settings.transport == "kafka":
        return await ensure_kafka_topics(settings, topics)
    try:
        await runtime.open_databases()
        engine = runtime.engine(ALL_SERVICES[0].name)
        return await ensure_eventlog_topics(engine, settings.eventlog_partitions, topics)
    finally:
        await runtime.stop()


@events_app.command("replay-dead-letters")
def events_replay_dead_letters(
    service: Annotated[str, typer.Option(help="The consuming service whose dead letters")],
    event_id: Annotated[
        list[uuid.UUID] | None,
        typer.Option("--event-id", help="An original event id; repeat for several"),
    ] = None,
    event_type: Annotated[
        str | None, typer.Option("--type", help="Only dead letters of this event type")
    ] = None,
    since: Annotated[
        datetime | None, typer.Option(help="Only dead letters written at or after this time")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="List what would be replayed; change nothing")] = (
        False
    ),
) -> None:
    """Re-publish chosen dead letters onto their original topics, after a fix.

    Dead letters are read from SERVICE's outbox (rows of type event.dead_lettered, which
    the relay keeps after publishing). Each original message is published again with its
    original key, bytes and event id, through the configured transport.

    The consumer that gave up on an event recorded it in its inbox with outcome
    dead_lettered, not applied; an inbox row makes a consumer skip the event id, so
    replay first deletes those dead_lettered rows (of that consumer group only), then
    publishes. Groups that had applied the event skip the replay via their inbox.
    """
    settings = _settings()
    definition = _service(service)
    letters = asyncio.run(
        _replay(settings, definition, event_id or [], event_type, since, dry_run=dry_run)
    )
    verb = "would replay" if dry_run else "replayed"
    for letter in letters:
        typer.echo(
            f"{verb}: {letter.event_id or '(unparseable)'} {letter.event_type or '-'} "
            f"-> {letter.message.topic}  ({letter.reason})"
        )
    typer.echo(f"{verb} {len(letters)} dead letter(s) of {definition.name}")


async def _replay(
    settings: Settings,
    service: ServiceDefinition,
    event_ids: list[uuid.UUID],
    event_type: str | None,
    since: datetime | None,
    *,
    dry_run: bool,
) -> list[DeadLetter]:
    runtime = Runtime(settings, [service])
    try:
        if dry_run:
            await runtime.open_databases()
        else:
            await runtime.start(migrate_schemas=False)
        return await replay_matching(
            runtime.sessions(service.name),
            service.schema,
            runtime.transport,
            event_ids=event_ids,
            event_type=event_type,
            since=since,
            dry_run=dry_run,
        )
    finally:
        await runtime.stop()
