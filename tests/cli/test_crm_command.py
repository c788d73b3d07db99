"""The `crm` command as a user runs it: a real process, a real embedded server."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from pydantic import SecretStr

from shared.auth import Scope, issue_token
from shared.db.embedded import stop_embedded_server
from shared.events import EVENTS
from shared.events.schema import render
from shared.settings import Settings
from tests.support.processes import free_port

CRM = [sys.executable, "-m", "crm"]
SERVICES = ("contacts", "loyalty", "referrals", "scoring", "messaging")
DRAIN_SECRET = "drain-test-secret-long-enough-for-hs256-0123456789"


@pytest.fixture(scope="module")
def data_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="crm-cli-"))
    yield path
    stop_embedded_server(path)  # in case a crm process died without stopping it
    shutil.rmtree(path, ignore_errors=True)


def environment(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_")}
    env.update({"CRM_DATA_DIR": str(data_dir), "CRM_LOG_JSON": "true", **extra})
    return env


def start_up(data_dir: Path, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CRM, "up"],
        env=environment(data_dir, CRM_PORT=str(port)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_healthy(port: int, service: str = "contacts", timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/{service}/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{service} did not serve within {timeout} s")


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    output, logs = process.communicate(timeout=30)
    # uvicorn re-raises the signal after its graceful shutdown, as servers conventionally do.
    assert process.returncode in (0, -signal.SIGTERM), logs
    assert '"event": "app.stopped"' in logs, "the lifespan must finish its shutdown"
    return output


def test_up_serves_every_service_and_prints_an_admin_token_once(data_dir: Path) -> None:
    port = free_port()
    process = start_up(data_dir, port)
    try:
        wait_healthy(port)
        for service in SERVICES:
            response = httpx.get(f"http://127.0.0.1:{port}/v1/{service}/healthz")
            assert response.json() == {"status": "ok", "service": service}
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
    finally:
        first_output = stop(process)
    assert f"http://127.0.0.1:{port}" in first_output
    token = first_output.split("admin token", 1)[1].split()[-1]
    secret = (data_dir / "jwt-secret").read_text().strip()
    claims = jwt.decode(token, secret, algorithms=["HS256"], audience="crm")
    assert claims["scope"] == "admin"

    port = free_port()
    again = start_up(data_dir, port)
    try:
        wait_healthy(port)
    finally:
        second_output = stop(again)
    assert "admin token" not in second_output, "the token is printed on first start only"


def test_token_issue_makes_a_verifiable_store_token(data_dir: Path) -> None:
    result = subprocess.run(
        [*CRM, "token", "issue", "--scope", "pos", "--store", "kl-01", "--subject", "till-3"],
        env=environment(data_dir),
        capture_output=True,
        text=True,
        check=True,
    )
    secret = (data_dir / "jwt-secret").read_text().strip()
    claims = jwt.decode(result.stdout.strip(), secret, algorithms=["HS256"], audience="crm")
    assert (claims["scope"], claims["store"], claims["sub"]) == ("pos", "kl-01", "till-3")


def test_token_issue_refuses_an_unknown_scope(data_dir: Path) -> None:
    result = subprocess.run(
        [*CRM, "token", "issue", "--scope", "root"],
        env=environment(data_dir),
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "root" in result.stderr


def test_migrate_twice_at_once_is_safe(data_dir: Path) -> None:
    runs = [
        subprocess.Popen(
            [*CRM, "migrate"],
            env=environment(data_dir),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for run in runs:
        out, err = run.communicate(timeout=60)
        assert run.returncode == 0, err
        assert "migrated: contacts, loyalty, referrals, scoring, messaging" in out


def test_events_schema_prints_the_committed_document() -> None:
    result = subprocess.run([*CRM, "events", "schema"], capture_output=True, text=True, check=True)
    assert result.stdout == render(EVENTS)


def test_unknown_service_is_a_clear_error(data_dir: Path) -> None:
    result = subprocess.run(
        [*CRM, "serve", "billing"], env=environment(data_dir), capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "no service called 'billing'" in result.stderr


def test_embedded_server_stops_with_the_last_crm_process(data_dir: Path) -> None:
    assert not (data_dir / "pg" / "postmaster.pid").exists()


def test_serve_runs_one_service_alone(data_dir: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [*CRM, "serve", "loyalty"],
        env=environment(data_dir, CRM_PORT=str(port)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_healthy(port, "loyalty")
        assert httpx.get(f"http://127.0.0.1:{port}/v1/loyalty/readyz").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/v1/contacts/healthz").status_code == 404
    finally:
        stop(process)


def test_worker_stops_cleanly_on_sigterm(data_dir: Path) -> None:
    metrics_port = free_port()
    process = subprocess.Popen(
        [*CRM, "worker", "scoring"],
        env=environment(data_dir, CRM_METRICS_PORT=str(metrics_port)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()  # printed once the relay and consumer are running
    assert "scoring worker running" in line
    probes = f"http://127.0.0.1:{metrics_port}"
    assert httpx.get(f"{probes}/healthz").text == "ok\n"
    assert "crm_outbox_oldest_unpublished_age_seconds" in httpx.get(f"{probes}/metrics").text
    process.send_signal(signal.SIGTERM)
    _, logs = process.communicate(timeout=30)
    assert process.returncode == 0, logs


def test_serve_drains_a_request_in_flight_on_sigterm(data_dir: Path) -> None:
    """SIGTERM mid-upload: the upload still completes, then the process exits."""
    port = free_port()
    process = subprocess.Popen(
        [*CRM, "serve", "contacts"],
        env=environment(
            data_dir,
            CRM_PORT=str(port),
            CRM_JWT_SECRET=DRAIN_SECRET,
            CRM_SHUTDOWN_GRACE_SECONDS="10",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}/v1/contacts"
    header_sent = threading.Event()

    def slow_csv() -> Iterator[bytes]:
        yield b"email,given_name\n"
        header_sent.set()
        time.sleep(1.5)  # SIGTERM arrives while the body is still coming
        yield b"drained@example.com,Drained\n"

    token = issue_token(
        Settings(jwt_secret=SecretStr(DRAIN_SECRET)), subject="ops", scopes=[Scope.ADMIN]
    )
    responses: list[httpx.Response] = []

    def upload() -> None:
        responses.append(
            httpx.post(
                f"{base}/imports",
                content=slow_csv(),
                headers={"Content-Type": "text/csv", "Authorization": f"Bearer {token}"},
                timeout=30,
            )
        )

    try:
        wait_healthy(port)
        uploader = threading.Thread(target=upload)
        uploader.start()
        assert header_sent.wait(10)
        time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        uploader.join(30)
        assert responses, "the upload got no answer"
        assert responses[0].status_code == 202, responses[0].text
        assert responses[0].json()["status"] in ("pending", "running", "completed")
    finally:
        stop(process)
