"""Real child processes for deployment tests: start, signal, wait for, and report on them.

A test that runs the production topology starts a dozen `crm` processes. Each one writes
its stdout and stderr to a file, so a failing test can show the tail of every log, and a
`ProcessGroup` kills whatever is still running when the test ends, however it ends.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

CRM = (sys.executable, "-m", "crm")
"""How to run the `crm` command in a child: the image's entrypoint, from this venv."""


_HANDED_OUT: set[int] = set()
# Below Linux's ephemeral range (32768-60999), so the local end of some outgoing connection
# cannot take a port between our probe and the child's bind.
_PORTS = range(20_000, 32_000)


def free_port() -> int:
    """A loopback port nobody listens on now and no earlier call of this process handed out.

    The child binds it a moment later; handing each port out once keeps two children of
    one test (an API and a worker's probe port, say) from being given the same one.
    """
    while True:
        port = random.choice(_PORTS)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port


@dataclass
class Child:
    """One running (or finished) child process and the file its output goes to."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        """The process id, for signals and messages."""
        return self.process.pid

    def running(self) -> bool:
        """True while the process has not exited."""
        return self.process.poll() is None

    def output(self) -> str:
        """Everything the process wrote so far (stdout and stderr interleaved)."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 40) -> str:
        """The last `lines` lines of its output, headed by its name and state."""
        state = "running" if self.running() else f"exited {self.process.returncode}"
        body = "\n".join(self.output().splitlines()[-lines:])
        return f"----- {self.name} (pid {self.pid}, {state}) -----\n{body}"

    def send(self, signum: signal.Signals) -> None:
        """Deliver `signum` to the process, if it still runs."""
        if self.running():
            self.process.send_signal(signum)

    async def exit_code(self, timeout: float) -> int:
        """Wait (without blocking the loop) up to `timeout` seconds for the exit code."""
        deadline = time.monotonic() + timeout
        while (code := self.process.poll()) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} still runs after {timeout:.1f} s")
            await asyncio.sleep(0.02)
        return code


@dataclass
class ProcessGroup:
    """The children of one test, all logging under `log_dir`; `stop_all` ends them."""

    log_dir: Path
    children: list[Child] = field(default_factory=list)

    def start(self, name: str, args: Sequence[str], env: Mapping[str, str]) -> Child:
        """Start `args` with `env` (plus PATH, HOME and LANG only), output to `<name>.log`."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        inherited = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
        with log.open("wb") as sink:
            process = subprocess.Popen(
                list(args),
                env={**inherited, **env},
                cwd=self.log_dir,  # not the checkout: no developer's .env is read
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a signal to the test runner does not reach it
            )
        child = Child(name, process, log)
        self.children.append(child)
        return child

    async def run(
        self, name: str, args: Sequence[str], env: Mapping[str, str], timeout: float
    ) -> Child:
        """Start a one-shot command and wait for it to exit; the caller checks the code."""
        child = self.start(name, args, env)
        await child.exit_code(timeout)
        return child

    def report(self, lines: int = 40) -> str:
        """The tail of every child's log, for a failure message."""
        return "\n".join(child.tail(lines) for child in self.children)

    def stop_all(self) -> None:
        """SIGKILL every child still running and reap it; safe to call more than once."""
        for child in self.children:
            if child.running():
                child.process.kill()
        for child in self.children:
            try:
                child.process.wait(10)
            except subprocess.TimeoutExpired:
                pass  # a zombie the OS will reap with us; nothing more we can do


async def wait_for_http(client: httpx.AsyncClient, url: str, child: Child, timeout: float) -> None:
    """Poll `url` until it answers 200; fail early if `child` exits meanwhile."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        if not child.running():
            raise AssertionError(f"{child.name} exited while starting\n{child.tail()}")
        try:
            response = await client.get(url, timeout=2.0)
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} not ready within {timeout} s ({last})\n{child.tail()}")
        await asyncio.sleep(0.1)


async def eventually(check: Callable[[], Awaitable[str | None]], timeout: float, what: str) -> None:
    """Poll `check` (None when satisfied, else what is still missing) until `timeout`.

    Separate processes reach a state some time after the request that caused it; the
    message of the last check says what was still missing when time ran out.
    """
    deadline = time.monotonic() + timeout
    while (missing := await check()) is not None:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout} s: {missing}")
        await asyncio.sleep(0.2)
