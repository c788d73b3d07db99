"""CSV imports: a received file becomes a job that applies its rows in batches, in the
background, each batch one transaction with its events and its error report.

Flow: the upload is written to disk as it arrives and read once to check it (UTF-8,
CSV, known columns, row limit); the job row is committed and a task starts. The task
reads rows a batch at a time, has them checked and normalised off the event loop (in a
worker process for big files), then in one transaction: locks the job row, locks the
contacts the batch's identifiers match, decides every row in order (`import_resolve`),
writes contacts, outbox events and refused lines with `COPY`, and adds to the job's
counters. A batch that loses a race (a unique identifier taken meanwhile, a deadlock)
is rolled back and decided again.

The app's lifespan owns an `Importer`: at start it resumes jobs a stop interrupted
(their file is still on disk; `rows_seen` says where to go on), at stop it lets each job
finish the batch in hand.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import uuid
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import aclosing
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.contacts import import_files, import_repository
from services.contacts.import_files import Span
from services.contacts.import_lines import CheckedRows, Clock, check_span, fresh_cards, warm_up
from services.contacts.import_resolve import CardsExhausted, resolve
from services.contacts.import_rows import Columns
from services.contacts.models import SCHEMA, ImportJob
from services.contacts.profiles import ProfileRules
from shared.runtime import Runtime
from shared.settings import Settings

log = structlog.get_logger(__name__)

MAX_ATTEMPTS = 5
_WARM_BYTES = 1 << 20
"""Uploads bigger than this start the worker processes while the file is checked."""
_RETRYABLE = {"23505", "40P01", "40001"}  # unique violation, deadlock, serialization


@dataclass(frozen=True)
class ImportLimits:
    """How big an import may be and how it is run.

    `CRM_CONTACTS_IMPORT_MAX_ROWS`, `_MAX_BYTES`, `_BATCH_SIZE`, `_WORKERS` and
    `_PROCESS_THRESHOLD` override the defaults below.
    """

    max_rows: int = 1_000_000
    max_bytes: int = 1 << 30
    batch_size: int = 5_000
    workers: int = max(1, min(4, (os.cpu_count() or 2) - 1))
    """Processes that check rows of big files; 0 checks them in a thread."""
    process_threshold: int = 20_000
    """Files with more rows than this are checked in worker processes."""

    @classmethod
    def from_settings(cls, settings: Settings) -> ImportLimits:
        """The limits, with any `contacts_import_<name>` setting taking precedence."""
        limits = cls()
        for name in ("max_rows", "max_bytes", "batch_size", "workers", "process_threshold"):
            value = getattr(settings, f"contacts_import_{name}", None)
            if value is not None:
                limits = replace(limits, **{name: int(value)})
        return limits


@dataclass(frozen=True)
class Checked:
    """One batch: how many rows it covers, the rows checked, its first row's time."""

    count: int
    rows: CheckedRows
    base_us: int


class Importer:
    """Receives import files and runs their jobs; one per app, owned by its lifespan."""

    def __init__(
        self, runtime: Runtime, settings: Settings, limits: ImportLimits | None = None
    ) -> None:
        self._runtime = runtime
        self.limits = limits or ImportLimits.from_settings(settings)
        self.rules = ProfileRules(
            default_region=settings.contacts_default_region,
            card_prefix=settings.contacts_card_prefix,
            card_length=settings.contacts_card_length,
        )
        self.directory = Path(settings.data_dir) / "imports"
        self._grace = settings.shutdown_grace_seconds
        self._tasks: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._totals: dict[uuid.UUID, int] = {}
        self._pool: ProcessPoolExecutor | None = None
        self.stopping = False

    def sessions(self) -> async_sessionmaker[AsyncSession]:
        return self._runtime.sessions(SCHEMA)

    def rows_total(self, job_id: uuid.UUID) -> int | None:
        """Rows in a job's file, when this process received or resumed it."""
        return self._totals.get(job_id)

    async def start(self) -> None:
        """Resume the jobs a stop interrupted whose files are on this machine."""
        try:
            async with self.sessions()() as session:
                jobs = await import_repository.unfinished_jobs(session)
        except Exception:
            log.exception("contacts.import.resume_failed")
            return
        for job in jobs:
            path = import_files.job_path(self.directory, job.id)
            if job.id not in self._tasks and await asyncio.to_thread(path.exists):
                log.info("contacts.import.resumed", job_id=str(job.id), rows_seen=job.rows_seen)
                self._spawn(job.id, path, skip=job.rows_seen)

    async def stop(self) -> None:
        """Let each job finish its batch in hand; cancel what outlives the grace period.

        An interrupted job stays `running` with its file kept, and resumes at the next
        start; a cancelled batch rolled back, so nothing is applied twice.
        """
        self.stopping = True
        tasks = list(self._tasks.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self._grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self._drop_pool()

    async def receive(self, chunks: AsyncIterator[bytes], filename: str | None) -> ImportJob:
        """Store an upload, check it whole, create its job and start it.

        Raises `import_files.NotCsv`, `HeaderError` or `TooLarge`; nothing is kept then.
        """
        job_id = uuid.uuid4()
        path = import_files.job_path(self.directory, job_id)
        part = path.with_suffix(".part")
        try:
            await import_files.receive(chunks, part, max_bytes=self.limits.max_bytes)
            if await asyncio.to_thread(_size, part) > _WARM_BYTES:
                self._warm_pool()  # the processes start while the file is checked
            received = await asyncio.to_thread(
                import_files.check_file, part, self.limits.max_rows, self.limits.batch_size
            )
            await asyncio.to_thread(part.rename, path)
            job = ImportJob(
                id=job_id,
                status="running",
                filename=filename,
                rows_seen=0,
                rows_created=0,
                rows_updated=0,
                rows_failed=0,
                created_at=datetime.now(UTC),
            )
            # Committed before the task starts, so the task always finds its job.
            async with self.sessions()() as session, session.begin():
                await import_repository.add_job(session, job)
        except BaseException:
            await asyncio.to_thread(import_files.remove, part)
            await asyncio.to_thread(import_files.remove, path)
            raise
        self._totals[job_id] = received.rows
        log.info("contacts.import.received", job_id=str(job_id), rows=received.rows)
        self._spawn(job_id, path, skip=0, spans=received.spans)
        return job

    def _spawn(
        self, job_id: uuid.UUID, path: Path, *, skip: int, spans: list[Span] | None = None
    ) -> None:
        # The registry keeps a reference, so the task cannot be garbage-collected mid-run.
        task = asyncio.create_task(self._run(job_id, path, skip, spans), name=f"import:{job_id}")
        self._tasks[job_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job_id, None))

    async def _run(
        self, job_id: uuid.UUID, path: Path, skip: int, spans: list[Span] | None
    ) -> None:
        seen = skip
        try:
            columns, delimiter = await asyncio.to_thread(import_files.read_columns, path)
            if spans is None:  # resumed: cut what is left of the file again
                spans = await asyncio.to_thread(
                    import_files.scan, path, delimiter, self.limits.batch_size, skip=skip
                )
                self._totals[job_id] = skip + sum(span.rows for span in spans)
            # aclosing: leaving early cancels the batches being checked ahead, at once.
            async with aclosing(self._checked(path, columns, delimiter, spans)) as batches:
                async for checked in batches:
                    if self.stopping:
                        log.info("contacts.import.interrupted", job_id=str(job_id), rows_seen=seen)
                        return
                    if not await self._apply(job_id, seen, checked):
                        log.warning(
                            "contacts.import.taken_over", job_id=str(job_id), rows_seen=seen
                        )
                        return
                    seen += checked.count
        except asyncio.CancelledError:
            log.info("contacts.import.interrupted", job_id=str(job_id), rows_seen=seen)
            raise
        except Exception as exc:
            log.exception("contacts.import.failed", job_id=str(job_id), rows_seen=seen)
            reason = f"stopped after {seen} rows: {exc.__class__.__name__}: {exc}"[:1000]
            await self._finish(job_id, path, "failed", reason)
            return
        await self._finish(job_id, path, "completed", None)
        log.info("contacts.import.completed", job_id=str(job_id), rows=seen)

    async def _finish(self, job_id: uuid.UUID, path: Path, status: str, error: str | None) -> None:
        try:
            async with self.sessions()() as session, session.begin():
                await import_repository.finish_job(
                    session, job_id, status, error, datetime.now(UTC)
                )
        except Exception:
            # The job stays `running` and its file stays: the next start resumes it.
            log.exception("contacts.import.finish_failed", job_id=str(job_id))
            return
        self._totals.pop(job_id, None)
        await asyncio.to_thread(import_files.remove, path)

    def _executor(self, rows: int) -> Executor | None:
        """Worker processes for big files (None: the event loop's thread pool)."""
        if self.limits.workers <= 0 or rows <= self.limits.process_threshold:
            return None
        return self._warm_pool()

    def _warm_pool(self) -> Executor | None:
        """The worker processes, started now if they are not running."""
        if self.limits.workers <= 0:
            return None
        if self._pool is None:
            # spawn, not fork: forking a process that runs an event loop and holds
            # database connections is unsafe.
            self._pool = ProcessPoolExecutor(
                self.limits.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=warm_up,
                initargs=(self.rules.default_region,),
            )
            for _ in range(self.limits.workers):
                self._pool.submit(int)  # make the processes start (and warm up) now
        return self._pool

    async def _checked(
        self, path: Path, columns: Columns, delimiter: str, spans: list[Span]
    ) -> AsyncGenerator[Checked, None]:
        """The file's spans, checked, in order; the next few are checked ahead."""
        executor = self._executor(sum(span.rows for span in spans))
        loop = asyncio.get_running_loop()
        rules = self.rules
        ahead = max(2, self.limits.workers + 1)
        pending: deque[tuple[Span, int, asyncio.Future[Any]]] = deque()
        queued = iter(spans)
        next_us = 0

        def submit(span: Span, base_us: int, executor: Executor | None) -> asyncio.Future[Any]:
            return loop.run_in_executor(
                executor,
                check_span,
                str(path),
                delimiter,
                span,
                columns,
                rules.default_region,
                date.today(),
                base_us,
                rules.card_prefix,
                rules.card_length,
            )

        try:
            while True:
                while len(pending) < ahead and (span := next(queued, None)) is not None:
                    # Row times: one microsecond apart, later than any earlier batch's.
                    base_us = max(Clock.starting(datetime.now(UTC)).base_us, next_us)
                    next_us = base_us + span.rows
                    pending.append((span, base_us, submit(span, base_us, executor)))
                if not pending:
                    return
                span, base_us, future = pending.popleft()
                try:
                    rows = await future
                except BrokenProcessPool:
                    # A worker died (killed, out of memory): go on in threads.
                    log.warning("contacts.import.workers_lost")
                    self._drop_pool()
                    executor = None
                    rows = await submit(span, base_us, None)
                    pending = deque((s, b, submit(s, b, None)) for s, b, _ in pending)
                yield Checked(span.rows, rows, base_us)
        finally:
            for _, _, future in pending:
                future.cancel()

    def _drop_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def _apply(self, job_id: uuid.UUID, seen: int, checked: Checked) -> bool:
        """Write one batch in one transaction; False when another runner did it."""
        rows = checked.rows
        clock = Clock(checked.base_us)
        spares = 16
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                async with self.sessions()() as session, session.begin():
                    claimed = await import_repository.claim_batch(session, job_id)
                    if claimed != ("running", seen):
                        return False
                    apg = await import_repository.driver(session)
                    existing = await import_repository.lock_matching(
                        apg, rows.emails, rows.phones, rows.cards
                    )
                    spare = fresh_cards(self.rules.card_prefix, self.rules.card_length, spares)
                    taken = await import_repository.taken_cards(apg, rows.generated + spare)
                    # A card some row gives is not free to hand out either.
                    taken.update(rows.cards)
                    free = [card for card in spare if card not in taken]
                    plan = await asyncio.to_thread(
                        resolve, existing, rows.valid, rows.prepared, clock, taken, free
                    )
                    plan.errors = sorted(rows.errors + plan.errors)
                    await import_repository.write_batch(apg, job_id, plan)
                    await import_repository.count_batch(session, job_id, checked.count, plan)
                return True
            except CardsExhausted:
                spares *= 8
            except Exception as exc:
                if attempt == MAX_ATTEMPTS or _sqlstate(exc) not in _RETRYABLE:
                    raise
                log.info(
                    "contacts.import.batch_retried",
                    job_id=str(job_id),
                    attempt=attempt,
                    reason=str(exc)[:200],
                )
                await asyncio.sleep(0.05 * attempt)
        raise RuntimeError("a batch could not be written")


def _size(path: Path) -> int:
    return path.stat().st_size


def _sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of an asyncpg error, raw or wrapped by SQLAlchemy."""
    seen: set[int] = set()
    current: Any = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        state = getattr(current, "sqlstate", None)
        if isinstance(state, str):
            return state
        current = getattr(current, "orig", None) or current.__cause__
    return None
