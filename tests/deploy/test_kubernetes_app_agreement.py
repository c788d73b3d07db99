"""deploy/k8s: the manifests agree with the application they deploy.

Ports, probes, Service and Ingress routing, settings and topics are compared with the
application itself: its FastAPI routes, the worker's probe server, `Settings`, and the
topics its registries use. Run against each overlay rendered by `kubectl kustomize`.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from crm.services import ALL_SERVICES, by_name
from shared.events.platform import DEAD_LETTER_TOPIC
from shared.http.app import create_app
from shared.probe_server import start_probe_server
from shared.runtime import Runtime
from shared.settings import REQUIRED_IN_PRODUCTION, Settings, known_environment_variables
from tests.deploy import k8s_support as k8s
from tests.deploy.k8s_support import SERVICES, Manifest, needs_kubectl

pytestmark = needs_kubectl


async def _statuses(settings: Settings, service: str, paths: list[str]) -> list[int]:
    """What the service's own app answers each path with (no lifespan: nothing connected)."""
    app = create_app(settings, [by_name(service)], run_workers=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://probe") as client:
        return [(await client.get(path)).status_code for path in paths]


@pytest.mark.parametrize("service", SERVICES)
async def test_api_ports_and_probes_match_the_app(
    objects: tuple[Manifest, ...], settings: Settings, service: str
) -> None:
    container = k8s.main_container(k8s.deployment(objects, service, "api"))
    assert container["args"] == ["serve", service]
    assert k8s.port(container, "http") == settings.port
    assert settings.host == "0.0.0.0"

    # Liveness must answer without the database; readiness must reach the check (503
    # here: nothing is connected) rather than fall through to a 404 like a wrong path.
    expected = {
        "livenessProbe": (f"/v1/{service}/healthz", 200),
        "startupProbe": (f"/v1/{service}/healthz", 200),
        "readinessProbe": (f"/v1/{service}/readyz", 503),
    }
    (monitor,) = [m for m in k8s.of_kind(objects, "ServiceMonitor") if k8s.name_of(m) == "crm-api"]
    (scrape,) = monitor["spec"]["endpoints"]
    paths = [container[probe]["httpGet"]["path"] for probe in expected]
    paths += [scrape["path"], f"/v1/{service}/healthz/no-such-probe"]
    statuses = await _statuses(settings, service, paths)
    assert statuses[-2:] == [200, 404], f"GET {scrape['path']} (scrape), GET an unknown path"
    for (probe, (path, status)), answered in zip(expected.items(), statuses, strict=False):
        get = container[probe]["httpGet"]
        assert get["path"] == path, f"{probe} of {service}"
        assert get["port"] in ("http", settings.port)
        assert answered == status, f"{probe}: GET {path} answered {answered}"


@pytest.mark.parametrize("service", SERVICES)
def test_api_service_reaches_the_container(objects: tuple[Manifest, ...], service: str) -> None:
    deployment = k8s.deployment(objects, service, "api")
    api = k8s.one(objects, "Service", f"crm-{service}-api")
    assert k8s.selects(api["spec"]["selector"], k8s.pod_labels(deployment))
    assert k8s.selects(deployment["spec"]["selector"], k8s.pod_labels(deployment))
    # The Service must not also select another service's pods, or a worker's.
    others = [d for d in k8s.of_kind(objects, "Deployment") if d is not deployment]
    assert not any(k8s.selects(api["spec"]["selector"], k8s.pod_labels(d)) for d in others)
    container = k8s.main_container(deployment)
    for port in api["spec"]["ports"]:
        target = port["targetPort"]
        number = k8s.port(container, target) if isinstance(target, str) else target
        assert number == k8s.port(container, "http")


def test_ingress_routes_each_prefix_to_its_api(objects: tuple[Manifest, ...]) -> None:
    (ingress,) = k8s.of_kind(objects, "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    routed: dict[str, tuple[str, Any]] = {}
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            assert path["pathType"] == "Prefix"
            backend = path["backend"]["service"]
            routed[path["path"]] = (backend["name"], backend["port"])
    assert set(routed) == {f"/v1/{service}/" for service in SERVICES}
    for service in SERVICES:
        name, port = routed[f"/v1/{service}/"]
        assert name == f"crm-{service}-api"
        ports = k8s.one(objects, "Service", name)["spec"]["ports"]
        assert any(port.get("name") == p["name"] or port.get("number") == p["port"] for p in ports)


def test_contacts_export_urls_name_the_api_services(
    objects: tuple[Manifest, ...], settings: Settings
) -> None:
    urls = settings.contacts_export_services
    assert set(urls) == set(SERVICES) - {"contacts"}
    for service, url in urls.items():
        match = re.fullmatch(r"http://([a-z0-9-]+)(?::(\d+))?", url)
        assert match, url
        api = k8s.one(objects, "Service", match.group(1))
        assert api is k8s.one(objects, "Service", f"crm-{service}-api")
        assert int(match.group(2) or 80) in {p["port"] for p in api["spec"]["ports"]}


@pytest.mark.parametrize("service", SERVICES)
def test_workers_serve_metrics_on_the_configured_port(
    objects: tuple[Manifest, ...], settings: Settings, service: str
) -> None:
    container = k8s.main_container(k8s.deployment(objects, service, "worker"))
    assert container["args"] == ["worker", service]
    assert k8s.port(container, "metrics") == settings.metrics_port
    for probe in ("livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    metrics = k8s.one(objects, "Service", f"crm-{service}-worker")
    assert [p["targetPort"] for p in metrics["spec"]["ports"]] == ["metrics"]


async def test_worker_probe_and_scrape_paths_are_served(objects: tuple[Manifest, ...]) -> None:
    """The worker's own probe server answers the liveness path and the scrape path."""
    container = k8s.main_container(k8s.deployment(objects, "loyalty", "worker"))
    (monitor,) = [
        m for m in k8s.of_kind(objects, "ServiceMonitor") if k8s.name_of(m) == "crm-worker"
    ]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics"
    server = await start_probe_server("127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for path in (container["livenessProbe"]["httpGet"]["path"], endpoint["path"]):
                assert (await client.get(path)).status_code == 200, path
            assert (await client.get("/no-such-probe")).status_code == 404
    finally:
        server.close()
        await server.wait_closed()


def test_every_crm_pod_migrates_its_schema_first(objects: tuple[Manifest, ...]) -> None:
    for service in SERVICES:
        for role in ("api", "worker"):
            init = k8s.pod_template(k8s.deployment(objects, service, role))["spec"][
                "initContainers"
            ]
            assert [c["args"] for c in init] == [["migrate", service]]
    job = k8s.one(objects, "Job", "crm-migrate")
    spec = k8s.pod_template(job)["spec"]
    assert [c["args"] for c in spec["initContainers"]] == [["migrate"]]
    assert [c["args"] for c in spec["containers"]] == [["topics", "ensure"]]


def test_every_variable_set_is_a_known_setting(objects: tuple[Manifest, ...]) -> None:
    known = known_environment_variables()
    unknown = set(k8s.settings_data(objects)) - known
    for where, container in k8s.crm_containers(objects):
        unknown |= {f"{where}: {name}" for name in k8s.environment(container, objects)} - {
            f"{where}: {name}" for name in known
        }
    assert not unknown, sorted(unknown)


def test_every_required_setting_reaches_every_crm_container(
    objects: tuple[Manifest, ...], settings: Settings
) -> None:
    assert settings.transport == "kafka"
    assert not settings.kafka_create_topics
    missing: list[str] = []
    for where, container in k8s.crm_containers(objects):
        env = k8s.environment(container, objects)
        for name in REQUIRED_IN_PRODUCTION:
            source = env.get(name)
            if source is None or source.optional:
                missing.append(f"{where}: {name}")
    assert not missing, missing


def test_topics_are_the_apps_topics(
    objects: tuple[Manifest, ...], settings: Settings, overlay: str
) -> None:
    """dev declares every topic as a KafkaTopic; prod leaves them to `crm topics ensure`."""
    app_topics = Runtime(settings, list(ALL_SERVICES)).registry_topics() | {DEAD_LETTER_TOPIC}
    topics = {t["spec"]["topicName"]: t["spec"] for t in k8s.of_kind(objects, "KafkaTopic")}
    if overlay == "prod":
        assert not topics and not k8s.of_kind(objects, "Kafka")
        assert settings.kafka_replication_factor >= 3
        return
    assert set(topics) == app_topics
    for spec in topics.values():
        assert spec["partitions"] == settings.kafka_partitions
        assert spec["replicas"] == settings.kafka_replication_factor
        retention_ms = int(settings.kafka_retention_hours * 3600 * 1000)
        assert int(spec["config"]["retention.ms"]) == retention_ms
    (kafka,) = k8s.of_kind(objects, "Kafka")
    assert "kafkaExporter" in kafka["spec"], "the lag alert needs the Kafka exporter"
    bootstrap = f"{k8s.name_of(kafka)}-kafka-bootstrap:9092"
    assert settings.kafka_bootstrap_servers == bootstrap
    (pool,) = k8s.of_kind(objects, "KafkaNodePool")
    assert pool["metadata"]["labels"]["strimzi.io/cluster"] == k8s.name_of(kafka)


def test_kafka_credentials_come_from_the_secret(
    objects: tuple[Manifest, ...], settings: Settings, overlay: str
) -> None:
    sasl = ("CRM_KAFKA_SASL_USERNAME", "CRM_KAFKA_SASL_PASSWORD")
    expected = "SASL_SSL" if overlay == "prod" else "PLAINTEXT"
    assert settings.kafka_security_protocol == expected
    for where, container in k8s.crm_containers(objects):
        env = k8s.environment(container, objects)
        if overlay == "prod":
            assert settings.kafka_sasl_mechanism
            assert all(env[name].origin == "secret" for name in sasl), where
        else:
            assert not set(sasl) & set(env), where
