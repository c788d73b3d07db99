"""The dispatcher: drains the send ledger into the channels, exactly once where it can.

One round (`run_once`) is three short transactions around the provider calls:

1. Claim. `SELECT ... FOR UPDATE SKIP LOCKED` the due `queued` rows (oldest first), so
   dispatchers in several workers never take the same row. The contact policy is applied
   now, against the projection as it is at send time: no consent → skipped; quiet hours
   in the recipient's zone → deferred to their end (`not_before` moves, nothing is
   dropped); over a frequency cap → skipped; a paused campaign → deferred; a cancelled
   one → cancelled; over a campaign's `throttle_per_minute` → deferred to the next
   minute. The rest is rendered and set `reserved`, and the transaction COMMITS before
   any provider is called.
2. Send, `smtp_concurrency` messages at a time through the channels.
3. Record, in one transaction: `sent` with the provider's message id (and
   `message.sent`), or by class of failure: transient → queued again with back-off;
   permanent → `failed`, the address marked in `recipients.undeliverable`, and
   `message.failed`; rate-limited → queued again later and the dispatcher pauses.

Crashes. A crash before step 1 commits loses nothing (the rows are still queued). A
crash between the commit of step 1 and step 3 leaves `reserved` rows: we cannot know
whether the provider took the message. `reconcile()` (run at every start of `run()`
and of the worker job) puts rows reserved longer than `reserve_timeout` back in the
queue, and they are sent again with THE SAME idempotency key, the send id:
* HTTP providers and webhooks get `Idempotency-Key: <send id>`; a provider that honours
  it drops the duplicate, so those channels are exactly-once end to end.
* SMTP has no such key. Resending is the only way not to lose a message, so email is
  at-least-once across a crash in that window (`run()` records answers in groups of
  `RECORD_EVERY` as they arrive, so only those in flight or in the unflushed group);
  the copy carries the same `Message-ID: <send id@domain>`, which many mail systems use
  to drop duplicates. We prefer a rare duplicate to a silently lost voucher.
Redelivered events and restarted campaigns never create a second row (see `sends`), so
outside that window every message goes out once.

Throughput: claims, policy checks, reservations and results are batched (a handful of
statements per `batch_size` rows); SMTP sessions are pooled and reused; and `run()`
overlaps the database work of the next batch with the sending of the current one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time as monotonic
import uuid
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.messaging import channels as channel_registry
from services.messaging import links, policy, templates
from services.messaging.channels import Channel, Message, Outcome, Result
from services.messaging.models import SCHEMA, campaigns, recipients, sends
from shared.events.envelope import Event
from shared.events.messaging import MessageFailed, MessageSent
from shared.jobs import ScheduledJob
from shared.pipeline.outbox import add_events
from shared.settings import Settings

log = structlog.get_logger(__name__)

RESERVE_TIMEOUT = timedelta(minutes=10)
"""A reserved row older than this is presumed orphaned by a crash (see `reconcile`)."""
PAUSED_DEFER = timedelta(minutes=1)
RATE_LIMIT_PAUSE = timedelta(seconds=30)


@dataclass
class Job:
    """A reserved send with its rendered message."""

    row: RowMapping
    message: Message


@dataclass
class Claim:
    """The outcome of step 1 for one batch."""

    jobs: list[Job] = field(default_factory=list)
    handled: int = 0


@dataclass
class _Decisions:
    reserve: list[Job] = field(default_factory=list)
    defer: list[dict[str, Any]] = field(default_factory=list)
    skip: list[dict[str, Any]] = field(default_factory=list)
    cancel: list[uuid.UUID] = field(default_factory=list)
    fail: list[tuple[RowMapping, str]] = field(default_factory=list)


class Dispatcher:
    """Sends due messages from the ledger. One instance per worker process."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: Settings,
        *,
        channels: Mapping[str, Channel] | None = None,
        batch_size: int = 500,
        reserve_timeout: timedelta = RESERVE_TIMEOUT,
        idle_seconds: float = 1.0,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.channels = (
            dict(channels) if channels is not None else channel_registry.from_settings(settings)
        )
        self.batch_size = batch_size
        self.reserve_timeout = reserve_timeout
        self.idle_seconds = idle_seconds
        self._stopping = asyncio.Event()
        self._paused_until = 0.0

    # Public -------------------------------------------------------------------------

    async def run_once(self, limit: int, *, now: datetime | None = None) -> int:
        """Claim, send and record up to `limit` due sends; the number of rows handled.

        `now` is the policy's clock (tests move it past quiet hours); it defaults to now.
        """
        claim = await self.claim(limit, now=now)
        if claim.jobs:
            await self._finish(claim.jobs)
        return claim.handled

    async def run(self, *, until_idle: bool = False) -> int:
        """Reconcile, then dispatch until `stop()` (or until nothing is due)."""
        await self.reconcile()
        total = 0
        in_flight: set[asyncio.Task[int]] = set()
        while not self._stopping.is_set():
            await self._respect_rate_limit()
            claim = await self.claim(self.batch_size)
            total += claim.handled
            if claim.jobs:
                # Send this batch while the next one is claimed; at most two in flight.
                task = asyncio.create_task(self._finish(claim.jobs))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                if len(in_flight) >= 2:
                    await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                continue
            if in_flight:
                await asyncio.wait(in_flight)
                continue
            if until_idle:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.idle_seconds)
        if in_flight:
            await asyncio.gather(*in_flight)
        return total

    def stop(self) -> None:
        self._stopping.set()

    async def aclose(self) -> None:
        for channel in self.channels.values():
            await channel.aclose()

    async def reconcile(self, *, now: datetime | None = None) -> int:
        """Requeue sends reserved longer than `reserve_timeout` (a crash left them).

        They are sent again with the same send id as idempotency key; see the module text
        for what that guarantees per channel.
        """
        now = now or datetime.now(UTC)
        async with self.sessions.begin() as session:
            result = await session.execute(
                sa.update(sends)
                .where(
                    sends.c.status == "reserved", sends.c.reserved_at < now - self.reserve_timeout
                )
                .values(status="queued", not_before=now, last_error="reconciled: reserved at crash")
                .returning(sends.c.id)
            )
            ids = list(result.scalars())
        if ids:
            log.warning("messaging.dispatch.reconciled", count=len(ids))
        return len(ids)

    # Step 1: claim ------------------------------------------------------------------

    async def claim(self, limit: int, *, now: datetime | None = None) -> Claim:
        """Apply the policy to due rows, reserve what may go, and commit."""
        now = now or datetime.now(UTC)
        async with self.sessions.begin() as session:
            rows = list(
                (
                    await session.execute(
                        sa.select(sends)
                        .where(sends.c.status == "queued", sends.c.not_before <= now)
                        .order_by(sends.c.not_before)
                        .limit(limit)
                        .with_for_update(skip_locked=True)
                    )
                ).mappings()
            )
            if not rows:
                return Claim()
            decisions = await self._decide(session, rows, now)
            await self._apply(session, decisions, now)
        return Claim(decisions.reserve, len(rows))

    async def _decide(
        self, session: AsyncSession, rows: list[RowMapping], now: datetime
    ) -> _Decisions:
        customer_ids = list({r["customer_id"] for r in rows})
        people = {
            r["customer_id"]: r
            for r in (
                await session.execute(
                    sa.select(recipients).where(recipients.c.customer_id == sa.any_(_ids())),
                    {"ids": customer_ids},
                )
            ).mappings()
        }
        history = await self._marketing_history(session, rows, now)
        campaign_state = await self._campaigns(session, rows, now)
        names = list({_payload(r)["template"] for r in rows})
        variants = await templates.variants_of(session, names)

        d = _Decisions()
        throttled: dict[str, int] = defaultdict(int)
        caps = self.settings.messaging_frequency_caps
        default_zone = self.settings.messaging_time_zone
        ordered = sorted(
            rows,
            key=lambda r: (policy.priority(r["source"], marketing=_marketing(r)), r["not_before"]),
        )
        for row in ordered:
            marketing = _marketing(row)
            person = people.get(row["customer_id"])
            channel = row["channel"]
            why = policy.unreachable(person, channel, marketing=marketing)
            if why is not None:
                d.skip.append({"id": row["id"], "reason": why})
                continue
            assert person is not None
            state = campaign_state.get(row["source"])
            if state is not None:
                status, allowance = state
                if status == "cancelled":
                    d.cancel.append(row["id"])
                    continue
                if status != "running":
                    d.defer.append({"id": row["id"], "not_before": now + PAUSED_DEFER})
                    continue
                if allowance is not None and throttled[row["source"]] >= allowance:
                    d.defer.append({"id": row["id"], "not_before": _next_minute(now)})
                    continue
            if marketing:
                until = policy.quiet_until(
                    now,
                    policy.zone(person["time_zone"], default_zone),
                    self.settings.messaging_quiet_hours,
                )
                if until is not None:
                    d.defer.append({"id": row["id"], "not_before": until})
                    continue
                seen = history[(row["customer_id"], channel)]
                if policy.over_cap(caps, channel, seen, now):
                    d.skip.append({"id": row["id"], "reason": "frequency-cap"})
                    continue
                seen.append(now)
            if channel not in self.channels:
                d.fail.append((row, "channel-not-configured"))
                continue
            try:
                message = self._render(row, person, variants, marketing, now)
            except templates.TemplateInvalid as exc:
                d.fail.append((row, f"template: {exc}"[:500]))
                continue
            if message is None:
                d.fail.append((row, "template-missing"))
                continue
            throttled[row["source"]] += 1
            d.reserve.append(Job(row, message))
        return d

    def _render(
        self,
        row: RowMapping,
        person: RowMapping,
        variants: Mapping[tuple[str, str], list[RowMapping]],
        marketing: bool,
        now: datetime,
    ) -> Message | None:
        payload = _payload(row)
        channel = row["channel"]
        chosen = templates.choose(
            variants.get((payload["template"], channel), []), person["locale"]
        )
        if chosen is None:
            return None
        unsubscribe = (
            links.unsubscribe_url(self.settings, row["customer_id"], channel, now=now)
            if marketing
            else None
        )
        data = payload.get("data") or {}
        # Journeys carry their one link under its own name (a survey's signed answer link,
        # a double opt-in's confirmation link), campaigns in their offer: `{{ link }}` in
        # the template either way, as a tracked link that records the click and redirects.
        link = (
            data.get("link")
            or data.get("survey_url")
            or data.get("confirm_url")
            or (data.get("offer") or {}).get("link")
        )
        rendered = templates.compile_template(chosen["subject"], chosen["body"]).render(
            templates.context(
                person,
                data.get("offer"),
                locale=person["locale"] or chosen["locale"],
                link=links.tracked_url(self.settings, row["id"], str(link)) if link else None,
                unsubscribe_url=unsubscribe,
            )
        )
        to = policy.address(person, channel)
        assert to is not None
        return Message(
            send_id=row["id"],
            customer_id=row["customer_id"],
            channel=channel,
            to=to,
            body=rendered.body,
            subject=rendered.subject,
            unsubscribe_url=unsubscribe,
            # Marketing mail goes out with an HTML part carrying the open pixel.
            open_pixel_url=(
                links.open_pixel_url(self.settings, row["id"])
                if marketing and channel == "email"
                else None
            ),
            metadata={"source": row["source"]},
        )

    async def _marketing_history(
        self, session: AsyncSession, rows: list[RowMapping], now: datetime
    ) -> dict[tuple[uuid.UUID, str], list[datetime]]:
        """When each customer of the batch got marketing on each capped channel lately."""
        history: dict[tuple[uuid.UUID, str], list[datetime]] = defaultdict(list)
        caps = self.settings.messaging_frequency_caps
        capped = {r["customer_id"] for r in rows if _marketing(r) and r["channel"] in caps}
        if not capped:
            return history
        longest = max(days for _, days in caps.values())
        at = sa.func.coalesce(sends.c.sent_at, sends.c.reserved_at)
        result = await session.execute(
            sa.select(sends.c.customer_id, sends.c.channel, at).where(
                sends.c.customer_id.in_(capped),
                sends.c.status.in_(("reserved", "sent", "delivered")),
                sends.c.payload["marketing"].astext != "false",
                at >= now - timedelta(days=longest),
            )
        )
        for customer_id, channel, when in result.all():
            history[(customer_id, channel)].append(when)
        return history

    async def _campaigns(
        self, session: AsyncSession, rows: list[RowMapping], now: datetime
    ) -> dict[str, tuple[str, int | None]]:
        """Per campaign source: its status and how many more it may send this minute."""
        ids: dict[uuid.UUID, str] = {}
        for r in rows:
            if r["source"].startswith("campaign:"):
                with contextlib.suppress(ValueError):
                    ids[uuid.UUID(r["source"].removeprefix("campaign:"))] = r["source"]
        if not ids:
            return {}
        found = (
            await session.execute(
                sa.select(
                    campaigns.c.id, campaigns.c.status, campaigns.c.throttle_per_minute
                ).where(campaigns.c.id.in_(list(ids)))
            )
        ).all()
        state: dict[str, tuple[str, int | None]] = {}
        throttled: list[str] = []
        for campaign_id, status, per_minute in found:
            state[ids[campaign_id]] = (status, per_minute)
            if per_minute is not None:
                throttled.append(ids[campaign_id])
        if throttled:
            recent = await session.execute(
                sa.select(sends.c.source, sa.func.count())
                .where(
                    sends.c.source.in_(throttled),
                    sends.c.status.in_(("reserved", "sent", "delivered")),
                    sa.func.coalesce(sends.c.sent_at, sends.c.reserved_at)
                    > now - timedelta(minutes=1),
                )
                .group_by(sends.c.source)
            )
            used: dict[str, int] = dict(recent.all())
            for source in throttled:
                status, per_minute = state[source]
                assert per_minute is not None
                state[source] = (status, max(per_minute - used.get(source, 0), 0))
        return state

    async def _apply(self, session: AsyncSession, d: _Decisions, now: datetime) -> None:
        if d.reserve:
            await session.execute(
                sa.update(sends)
                .where(sends.c.id == sa.any_(_ids()))
                .values(status="reserved", reserved_at=now, attempts=sends.c.attempts + 1),
                {"ids": [job.row["id"] for job in d.reserve]},
            )
        if d.defer:
            await session.execute(
                sa.update(sends)
                .where(sends.c.id == sa.bindparam("_id"))
                .values(not_before=sa.bindparam("not_before")),
                [{"_id": x["id"], "not_before": x["not_before"]} for x in d.defer],
            )
        if d.skip:
            await session.execute(
                sa.update(sends)
                .where(sends.c.id == sa.bindparam("_id"))
                .values(status="skipped", reason=sa.bindparam("reason")),
                [{"_id": x["id"], "reason": x["reason"]} for x in d.skip],
            )
        if d.cancel:
            await session.execute(
                sa.update(sends)
                .where(sends.c.id.in_(d.cancel))
                .values(status="cancelled", reason="campaign-cancelled")
            )
        if d.fail:
            await self._fail(session, [(row, reason, False) for row, reason in d.fail], now)

    # Step 2: send -------------------------------------------------------------------

    async def deliver(self, jobs: list[Job]) -> list[Result]:
        """Hand each message to its channel; channels bound their own concurrency."""
        limit = asyncio.Semaphore(max(self.settings.smtp_concurrency, 1) * 2)

        async def one(job: Job) -> Result:
            async with limit:
                return await self.channels[job.message.channel].send(job.message)

        return list(await asyncio.gather(*(one(job) for job in jobs)))

    # Step 3: record -----------------------------------------------------------------

    async def record(
        self, jobs: list[Job], results: list[Result], *, now: datetime | None = None
    ) -> None:
        """Write what the providers answered, in one transaction."""
        now = now or datetime.now(UTC)
        sent: list[tuple[Job, Result]] = []
        retry: list[dict[str, Any]] = []
        failed: list[tuple[RowMapping, str, bool]] = []
        rate_limited = False
        for job, result in zip(jobs, results, strict=True):
            attempts = job.row["attempts"] + 1
            if result.outcome is Outcome.OK:
                sent.append((job, result))
            elif result.outcome is Outcome.PERMANENT:
                failed.append((job.row, result.error or "permanent", True))
            elif result.outcome is Outcome.RATE_LIMITED:
                rate_limited = True
                # Not the message's fault: the attempt is given back.
                retry.append(_retry(job, now + RATE_LIMIT_PAUSE, attempts - 1, result.error))
            elif attempts >= policy.MAX_ATTEMPTS:
                failed.append((job.row, f"retries exhausted: {result.error}", False))
            else:
                retry.append(
                    _retry(job, now + policy.retry_delay(attempts), attempts, result.error)
                )
        async with self.sessions.begin() as session:
            if sent:
                # `queued` too: a slow round finishing after a reconcile still counts.
                await session.execute(
                    _RECORD_SENT,
                    {
                        "ids": [job.row["id"] for job, _ in sent],
                        "pids": [r.provider_message_id for _, r in sent],
                        "now": now,
                    },
                )
                events: list[Event] = [
                    MessageSent(
                        send_id=job.row["id"],
                        customer_id=job.row["customer_id"],
                        channel=job.row["channel"],
                        source=job.row["source"],
                        provider_message_id=r.provider_message_id,
                        variant=job.row["variant"],
                        sent_at=now,
                    )
                    for job, r in sent
                ]
                await add_events(session, SCHEMA, events, source=SCHEMA)
            if retry:
                await session.execute(
                    sa.update(sends)
                    .where(sends.c.id == sa.bindparam("_id"), sends.c.status == "reserved")
                    .values(
                        status="queued",
                        not_before=sa.bindparam("not_before"),
                        attempts=sa.bindparam("attempts"),
                        last_error=sa.bindparam("error"),
                    ),
                    retry,
                )
            if failed:
                await self._fail(session, failed, now)
        if rate_limited:
            self._paused_until = monotonic.monotonic() + RATE_LIMIT_PAUSE.total_seconds()
            log.warning(
                "messaging.dispatch.rate_limited", pause_seconds=RATE_LIMIT_PAUSE.total_seconds()
            )

    async def _fail(
        self, session: AsyncSession, failed: list[tuple[RowMapping, str, bool]], now: datetime
    ) -> None:
        await session.execute(
            sa.update(sends)
            .where(sends.c.id == sa.bindparam("_id"))
            .values(
                status="failed",
                failed_at=now,
                reason=sa.bindparam("reason"),
                last_error=sa.bindparam("reason"),
            ),
            [{"_id": row["id"], "reason": reason} for row, reason, _ in failed],
        )
        for row, reason, permanent in failed:
            if permanent:
                # The address is bad: stop using it until contacts sends a new one.
                await session.execute(
                    sa.update(recipients)
                    .where(recipients.c.customer_id == row["customer_id"])
                    .values(
                        undeliverable=recipients.c.undeliverable.op("||")(
                            sa.func.jsonb_build_object(row["channel"], reason[:200])
                        ),
                        updated_at=now,
                    )
                )
        events: list[Event] = [
            MessageFailed(
                send_id=row["id"],
                customer_id=row["customer_id"],
                channel=row["channel"],
                source=row["source"],
                reason=reason,
                permanent=permanent,
                failed_at=now,
            )
            for row, reason, permanent in failed
        ]
        await add_events(session, SCHEMA, events, source=SCHEMA)

    async def _finish(self, jobs: list[Job]) -> int:
        """Send a batch, recording results as they come in, not after the whole batch.

        A crash can only strand (and later resend) messages whose answer has not been
        recorded yet: with a flush every `RECORD_EVERY` answers, that is at most the
        messages in flight plus one unflushed group, not the whole batch.
        """
        limit = asyncio.Semaphore(max(self.settings.smtp_concurrency, 1) * 2)

        async def one(job: Job) -> tuple[Job, Result]:
            async with limit:
                return job, await self.channels[job.message.channel].send(job.message)

        done: list[tuple[Job, Result]] = []
        for answered in asyncio.as_completed([one(job) for job in jobs]):
            done.append(await answered)
            if len(done) >= RECORD_EVERY:
                await self.record([j for j, _ in done], [r for _, r in done])
                done = []
        if done:
            await self.record([j for j, _ in done], [r for _, r in done])
        return len(jobs)

    async def _respect_rate_limit(self) -> None:
        wait = self._paused_until - monotonic.monotonic()
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), wait)


RECORD_EVERY = 32
"""Answers recorded per transaction while a batch is being sent (see `_finish`)."""


def _ids() -> sa.BindParameter[Any]:
    """`:ids` as one uuid[] parameter: one bind instead of a thousand in an IN list."""
    return sa.bindparam("ids", type_=ARRAY(sa.Uuid))


_RECORD_SENT = sa.text(
    """
    UPDATE messaging.sends AS s
    SET status = 'sent', sent_at = :now, provider_message_id = v.pid, last_error = NULL
    FROM unnest(CAST(:ids AS uuid[]), CAST(:pids AS text[])) AS v(id, pid)
    WHERE s.id = v.id AND s.status IN ('reserved', 'queued')
    """
)
"""Record a batch of sent messages in one statement."""


def _payload(row: RowMapping) -> dict[str, Any]:
    payload: dict[str, Any] = row["payload"] or {}
    return payload


def _marketing(row: RowMapping) -> bool:
    return bool(_payload(row).get("marketing", True))


def _retry(job: Job, not_before: datetime, attempts: int, error: str | None) -> dict[str, Any]:
    return {"_id": job.row["id"], "not_before": not_before, "attempts": attempts, "error": error}


def _next_minute(now: datetime) -> datetime:
    return now.replace(second=0, microsecond=0) + timedelta(minutes=1)


async def dispatch(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> int:
    """The worker job: reconcile, then send everything due, then release the channels."""
    dispatcher = Dispatcher(sessions, settings)
    try:
        return await dispatcher.run(until_idle=True)
    finally:
        await dispatcher.aclose()


JOB = ScheduledJob(name="dispatch", interval_seconds=5.0, run=dispatch)
