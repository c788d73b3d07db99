"""deploy/compose: a valid Compose file whose settings, checks and routes agree with the app.

The file is validated against the Compose specification schema (check-jsonschema ships
it) and, where the Docker client has the compose plugin, by `docker compose config`.
The rest reads the YAML (anchors and merge keys resolved, as Compose does) and checks
it against `shared.settings` and the commands of `crm`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.settings import (
    REQUIRED_IN_PRODUCTION,
    SECRET_ENVIRONMENT_VARIABLES,
    SERVICE_NAMES,
    Settings,
    known_environment_variables,
)

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
NGINX_CONF = COMPOSE_DIR / "nginx.conf"

API_PORT = 8000
# Settings whose values are secrets: compose.yaml may only take them from .env.
# `${NAME`, but not the escaped `$${NAME}` that the container's shell expands.
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")
ENV_LINE = re.compile(r"^(#\s*)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")

Service = dict[str, Any]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Service]:
    found: dict[str, Service] = compose["services"]
    return found


@pytest.fixture(scope="module")
def crm_services(services: dict[str, Service]) -> dict[str, Service]:
    """The containers running the crm image: the ones built from deploy/Dockerfile."""
    crm = {name: s for name, s in services.items() if "build" in s}
    assert crm, "no service builds the crm image"
    return crm


@pytest.fixture(scope="module")
def example() -> tuple[dict[str, str], dict[str, str]]:
    """.env.example as (active assignments, commented-out `# NAME=value` lines)."""
    active: dict[str, str] = {}
    commented: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = ENV_LINE.match(line.strip())
        if match:
            comment, name, value = match.groups()
            (commented if comment else active)[name] = _dotenv_value(value)
    return active, commented


def _dotenv_value(raw: str) -> str:
    """The value Compose reads: single quotes are literal, and are dropped."""
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        return raw[1:-1]
    return raw


def _interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's `${X}`, `${X:-default}` and `${X:?error}`, enough for this file."""

    def replace(match: re.Match[str]) -> str:
        name, operator, argument = match.group(1), match.group(2), match.group(3)
        if variables.get(name):
            return variables[name]
        assert operator != ":?", f"{name} is required: {argument}"
        return argument if operator == ":-" else ""

    resolved = re.sub(r"(?<!\$)\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", replace, value)
    return resolved.replace("$$", "$")


def _environment(service: Service) -> dict[str, str]:
    environment = service.get("environment") or {}
    assert isinstance(environment, dict), "environment as a mapping, so anchors merge"
    return {str(k): str(v) for k, v in environment.items()}


def _kinds(services: dict[str, Service], kind: str) -> dict[str, Service]:
    return {svc: services[f"{svc}-{kind}"] for svc in SERVICE_NAMES}


def _seconds(duration: str) -> float:
    total = 0.0
    for amount, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration):
        total += float(amount) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    assert total, f"not a duration: {duration!r}"
    return total


# ---- the file is valid Compose ----


def test_compose_file_matches_the_compose_specification() -> None:
    beside_python = Path(sys.executable).parent / "check-jsonschema"
    command = (
        [str(beside_python)]
        if beside_python.exists()
        else [sys.executable, "-m", "check_jsonschema"]
    )
    result = subprocess.run(
        [*command, "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_docker_compose_accepts_the_file_with_the_example_env() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("the docker client is not installed")
    version = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, timeout=30
    )
    if version.returncode != 0:
        said = (version.stderr or version.stdout).strip().splitlines()
        pytest.skip(f"the docker compose plugin is missing ({said[0] if said else 'no output'})")
    result = subprocess.run(
        [
            docker,
            "compose",
            "-f",
            str(COMPOSE_FILE),
            "--env-file",
            str(ENV_EXAMPLE),
            "config",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=COMPOSE_DIR,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_obsolete_top_level_version(compose: dict[str, Any]) -> None:
    assert "version" not in compose


# ---- settings ----


def test_every_crm_variable_set_is_a_setting(crm_services: dict[str, Service]) -> None:
    known = known_environment_variables()
    for name, service in crm_services.items():
        unknown = {k for k in _environment(service) if k.startswith("CRM_")} - known
        assert not unknown, f"{name} sets variables no setting reads: {sorted(unknown)}"


def test_every_required_setting_is_set_for_every_crm_container(
    crm_services: dict[str, Service],
) -> None:
    for name, service in crm_services.items():
        environment = _environment(service)
        missing = [v for v in REQUIRED_IN_PRODUCTION if not environment.get(v)]
        assert not missing, f"{name} is not given {missing}"
        assert environment["CRM_TRANSPORT"] == "kafka"
        assert environment["CRM_KAFKA_CREATE_TOPICS"] == "false"


def test_each_container_environment_is_accepted_by_settings(
    crm_services: dict[str, Service],
    example: tuple[dict[str, str], dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What a container would start with after `cp .env.example .env` passes validation."""
    active, _ = example
    for name, service in crm_services.items():
        for variable in known_environment_variables():
            monkeypatch.delenv(variable, raising=False)
        environment = {
            **{k: v for k, v in active.items() if k.startswith("CRM_")},  # the env_file
            **{k: _interpolate(v, active) for k, v in _environment(service).items()},
        }
        for key, value in environment.items():
            monkeypatch.setenv(key, value)
        settings = Settings(_env_file=None)
        assert settings.transport == "kafka", name
        assert settings.database_url and "@postgres:5432/" in settings.database_url
        assert settings.jwt_signing_key_id in settings.jwt_keys


def test_every_documented_default_is_a_valid_value(
    example: tuple[dict[str, str], dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Uncommenting any line of .env.example must not stop a process from starting."""
    active, commented = example
    for variable in known_environment_variables():
        monkeypatch.delenv(variable, raising=False)
    for key, value in {**active, **commented}.items():
        if key.startswith("CRM_") and value:
            monkeypatch.setenv(key, value)
    Settings(_env_file=None)


def test_env_example_documents_every_setting_and_nothing_else(
    example: tuple[dict[str, str], dict[str, str]],
) -> None:
    active, commented = example
    listed = {name for name in {*active, *commented} if name.startswith("CRM_")}
    known = known_environment_variables()
    assert not known - listed, f"settings missing from .env.example: {sorted(known - listed)}"
    assert not listed - known, f".env.example names unknown settings: {sorted(listed - known)}"
    lines = ENV_EXAMPLE.read_text().splitlines()
    for number, line in enumerate(lines):
        match = ENV_LINE.match(line.strip())
        if match and match.group(2).startswith("CRM_"):
            above = lines[number - 1].strip() if number else ""
            explained = above.startswith("#") and not ENV_LINE.match(above)
            # Lines of a group (CRM_JWT_ISSUER, CRM_JWT_AUDIENCE) share one explanation.
            assert explained or ENV_LINE.match(above), f"line {number + 1} has no explanation"


def test_every_interpolated_variable_is_defined_in_env_example(
    example: tuple[dict[str, str], dict[str, str]],
) -> None:
    active, _ = example
    used = set(INTERPOLATION.findall(COMPOSE_FILE.read_text()))
    assert used, "compose.yaml interpolates nothing: where do the secrets come from?"
    assert not used - set(active), f"not defined in .env.example: {sorted(used - set(active))}"


def test_secrets_come_from_env_only(
    services: dict[str, Service], example: tuple[dict[str, str], dict[str, str]]
) -> None:
    for name, service in services.items():
        for key, value in _environment(service).items():
            if key in SECRET_ENVIRONMENT_VARIABLES or "PASSWORD" in key:
                assert INTERPOLATION.search(value), f"{name}: {key} is written in compose.yaml"
        database_url = _environment(service).get("CRM_DATABASE_URL")
        if database_url:
            # user (literal or interpolated) : password @ host
            user = r"(?:\$\{[^}]*\}|[^:@/$]+)"
            password = re.fullmatch(rf"[\w+]+://{user}:(.+)@[^@]+", database_url)
            assert password and re.fullmatch(r"\$\{[^}]+\}", password.group(1)), database_url
    active, commented = example
    for key, value in {**active, **commented}.items():
        if (
            (key in SECRET_ENVIRONMENT_VARIABLES or "PASSWORD" in key)
            and value
            and key != "CRM_DATABASE_URL"
        ):
            assert "change-me" in value, f".env.example: {key} needs a change-me placeholder"


# ---- structure ----


def test_an_api_and_a_worker_per_service(services: dict[str, Service]) -> None:
    for svc in SERVICE_NAMES:
        assert services[f"{svc}-api"]["command"] == ["serve", svc]
        assert services[f"{svc}-worker"]["command"] == ["worker", svc]
    assert services["migrate"]["command"] == ["migrate"]
    assert services["topics"]["command"] == ["topics", "ensure"]


def test_crm_containers_are_hardened_and_share_one_image(
    crm_services: dict[str, Service],
) -> None:
    images = {service["image"] for service in crm_services.values()}
    assert len(images) == 1, f"one crm image for every service: {images}"
    for name, service in crm_services.items():
        assert service["build"] == {"context": "../..", "dockerfile": "deploy/Dockerfile"}
        assert (ROOT / service["build"]["dockerfile"]).is_file()
        assert service["read_only"] is True, name
        assert "/tmp" in service["tmpfs"], name
        assert str(service["user"]).split(":")[0] == "10001", name
        assert "ALL" in service.get("cap_drop", []), name


def test_long_running_crm_containers_have_health_checks(
    services: dict[str, Service],
) -> None:
    for svc, api in _kinds(services, "api").items():
        check = " ".join(api["healthcheck"]["test"])
        assert f"http://127.0.0.1:{API_PORT}/v1/{svc}/readyz" in check
    for svc, worker in _kinds(services, "worker").items():
        port = _environment(worker).get("CRM_METRICS_PORT")
        port = port or str(Settings.model_fields["metrics_port"].default)
        check = " ".join(worker["healthcheck"]["test"])
        assert f"http://127.0.0.1:{port}/healthz" in check, svc
    for infra in ("postgres", "kafka", "proxy"):
        assert services[infra]["healthcheck"]["test"], infra


def test_depends_on_waits_for_health_and_setup(services: dict[str, Service]) -> None:
    allowed = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        for target, rule in depends.items():
            assert target in services, f"{name} depends on unknown {target}"
            assert rule["condition"] in allowed, f"{name} -> {target}"
    setup = {
        "postgres": "service_healthy",
        "kafka": "service_healthy",
        "migrate": "service_completed_successfully",
        "topics": "service_completed_successfully",
    }
    for kind in ("api", "worker"):
        for svc, service in _kinds(services, kind).items():
            conditions = {t: r["condition"] for t, r in service["depends_on"].items()}
            assert conditions == setup, f"{svc}-{kind}"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for svc in SERVICE_NAMES:
        rule = services["proxy"]["depends_on"][f"{svc}-api"]
        assert rule["condition"] == "service_healthy"


def test_stop_grace_period_outlasts_the_shutdown_grace(services: dict[str, Service]) -> None:
    default = Settings.model_fields["shutdown_grace_seconds"].default
    for kind in ("api", "worker"):
        for svc, service in _kinds(services, kind).items():
            grace = float(_environment(service).get("CRM_SHUTDOWN_GRACE_SECONDS", default))
            assert _seconds(service["stop_grace_period"]) > grace, f"{svc}-{kind}"


def test_infrastructure_images_are_pinned(services: dict[str, Service]) -> None:
    assert re.fullmatch(r"apache/kafka:\d+\.\d+\.\d+", services["kafka"]["image"])
    assert re.fullmatch(r"postgres:18\.\d+", services["postgres"]["image"])
    assert re.fullmatch(r"nginx:\d+\.\d+\.\d+-alpine", services["proxy"]["image"])
    postgres_volumes = services["postgres"]["volumes"]
    # PostgreSQL 18 images keep PGDATA in a versioned folder under /var/lib/postgresql.
    assert any(v.split(":")[1] == "/var/lib/postgresql" for v in postgres_volumes)
    kafka = services["kafka"]
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    log_dir = kafka["environment"]["KAFKA_LOG_DIRS"]
    assert any(v.split(":")[1] == log_dir for v in kafka["volumes"])


# ---- the proxy ----


def _nginx_locations(text: str) -> dict[str, str]:
    """Each `location [=] PATH { ... }` by "[= ]PATH", with the body's text.

    Enough for our file, which nests no locations and puts no braces in strings.
    """
    text = re.sub(r"#[^\n]*", "", text)
    pattern = r"location\s+(?:([=~^*]+)\s+)?([^\s{]+)\s*\{([^}]*)\}"
    return {
        f"{m.group(1)} {m.group(2)}" if m.group(1) else m.group(2): m.group(3)
        for m in re.finditer(pattern, text)
    }


def _nginx_upstreams(text: str) -> dict[str, list[str]]:
    """Each `upstream NAME { server HOST:PORT ...; }` by name, with its servers' addresses."""
    text = re.sub(r"#[^\n]*", "", text)
    return {
        m.group(1): re.findall(r"\bserver\s+([^\s;]+)", m.group(2))
        for m in re.finditer(r"upstream\s+(\S+)\s*\{([^}]*)\}", text)
    }


def test_proxy_routes_each_service_prefix_to_its_api(services: dict[str, Service]) -> None:
    text = NGINX_CONF.read_text()
    locations = _nginx_locations(text)
    upstreams = _nginx_upstreams(text)
    routed = {key for key in locations if "/v1" in key}
    # The prefix, and the bare path (POST /v1/contacts) that nginx would otherwise
    # answer with a redirect to the prefix.
    expected = {f"/v1/{svc}/" for svc in SERVICE_NAMES} | {f"= /v1/{svc}" for svc in SERVICE_NAMES}
    assert routed == expected
    for svc in SERVICE_NAMES:
        for key in (f"/v1/{svc}/", f"= /v1/{svc}"):
            targets = re.findall(r"proxy_pass\s+([^;]+);", locations[key])
            # No URI after the upstream: the path reaches the API unchanged.
            assert len(targets) == 1 and targets[0].startswith("http://"), key
            upstream = targets[0].removeprefix("http://")
            servers = upstreams.get(upstream, [upstream])
            assert servers == [f"{svc}-api:{API_PORT}"], key
        assert f"{svc}-api" in services
    for header in ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Request-Id"):
        assert re.search(rf"proxy_set_header\s+{header}\s", text), header
    listen = re.search(r"listen\s+(\d+)\s*;", text)
    assert listen
    proxy = services["proxy"]
    assert any(str(p).endswith(f":{listen.group(1)}") for p in proxy["ports"])
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in proxy["volumes"]


# ---- the health-check command really fails on an unready API ----


class _Readiness(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def readiness_server() -> Iterator[tuple[int, type[_Readiness]]]:
    handler = type("Handler", (_Readiness,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()


def test_api_health_check_passes_on_200_and_fails_on_503(
    services: dict[str, Service], readiness_server: tuple[int, type[_Readiness]]
) -> None:
    port, handler = readiness_server
    kind, program, flag, code = services["loyalty-api"]["healthcheck"]["test"]
    assert (kind, program, flag) == ("CMD", "python", "-c")
    code = code.replace(f"127.0.0.1:{API_PORT}", f"127.0.0.1:{port}")

    def run() -> int:
        return subprocess.run(
            [sys.executable, "-c", code], capture_output=True, timeout=30
        ).returncode

    handler.status = 200
    assert run() == 0
    handler.status = 503
    assert run() != 0
