"""deploy/k8s: every overlay renders, validates, and agrees with the app it deploys.

Each overlay is rendered with the real `kubectl kustomize`. Built-in objects are checked
with kubernetes-validate against the schemas of Kubernetes KUBERNETES_VERSION (strict: an
unknown field fails), custom resources against the CRD schemas vendored in
deploy/k8s/schemas. The probes, ports, routes, settings and topics are compared with the
application itself: its FastAPI routes, `Settings`, and the topics its registries use.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest

from crm.services import ALL_SERVICES, by_name
from shared.events.platform import DEAD_LETTER_TOPIC
from shared.http.app import create_app
from shared.probe_server import start_probe_server
from shared.runtime import Runtime
from shared.settings import REQUIRED_IN_PRODUCTION, Settings, known_environment_variables
from tests.deploy import k8s_support as k8s
from tests.deploy.k8s_support import Manifest

KUBERNETES_VERSION = "1.33"
SERVICES = tuple(service.name for service in ALL_SERVICES)
CONSUMING = {"loyalty", "referrals", "scoring", "messaging"}  # contacts' worker is a relay only
SECRET_SETTINGS = frozenset(
    {
        "CRM_DATABASE_URL",
        "CRM_JWT_KEYS",
        "CRM_JWT_SECRET",
        "CRM_KAFKA_SASL_PASSWORD",
        "CRM_SMTP_PASSWORD",
        "CRM_MESSAGING_WEBHOOK_SECRET",
        "CRM_MESSAGING_PROVIDERS",
    }
)
RUNBOOKS = frozenset(
    {
        "runbook-dead-letters",
        "runbook-stuck-relay",
        "runbook-lagging-consumer",
        "runbook-lost-broker",
        "runbook-database-failover",
        "runbook-http-errors",
    }
)

pytestmark = pytest.mark.skipif(
    k8s.kubectl() is None, reason="kubectl is not installed: the overlays cannot be rendered"
)


@pytest.fixture(params=k8s.OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def objects(overlay: str) -> tuple[Manifest, ...]:
    return k8s.render(overlay)


@pytest.fixture
def settings(objects: tuple[Manifest, ...], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings a crm process of this overlay builds: its ConfigMap plus stand-in secrets."""
    for name in known_environment_variables():
        monkeypatch.delenv(name, raising=False)
    data = k8s.settings_data(objects)
    for key, value in data.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CRM_DATABASE_URL", "postgresql+asyncpg://crm:stand-in@db:5432/crm")
    signing = data["CRM_JWT_SIGNING_KEY_ID"]
    monkeypatch.setenv("CRM_JWT_KEYS", f'{{"{signing}": "stand-in-key-of-32-bytes-or-more!!"}}')
    return Settings(_env_file=None)


def _deployment(objects: tuple[Manifest, ...], service: str, role: str) -> Manifest:
    return k8s.one(objects, "Deployment", f"crm-{service}-{role}")


def _main_container(workload: Manifest) -> Manifest:
    main: list[Manifest] = k8s.pod_template(workload)["spec"]["containers"]
    assert len(main) == 1, f"{k8s.name_of(workload)}: one container per pod"
    return main[0]


def _port(container: Manifest, name: str) -> int:
    ports = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == name]
    assert len(ports) == 1, f"{container['name']}: no single port named {name}"
    return int(ports[0])


# ---- schemas ------------------------------------------------------------------------


def test_built_in_objects_validate_against_kubernetes(objects: tuple[Manifest, ...]) -> None:
    failures: list[str] = []
    for manifest in objects:
        if k8s.is_custom(manifest):
            continue
        try:
            kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(part) for part in error.path)
            failures.append(f"{manifest['kind']}/{k8s.name_of(manifest)}: {path}: {error.message}")
    assert not failures, "\n".join(failures)


def test_custom_resources_validate_against_vendored_crds(objects: tuple[Manifest, ...]) -> None:
    customs = [manifest for manifest in objects if k8s.is_custom(manifest)]
    assert customs, "every overlay has ServiceMonitors and a PrometheusRule"
    failures: list[str] = []
    for manifest in customs:
        key = (manifest["apiVersion"], manifest["kind"])
        assert key in k8s.CRD_SCHEMAS, f"no vendored CRD schema for {key}"
        validator = jsonschema.Draft7Validator(k8s.crd_schema(k8s.CRD_SCHEMAS[key]))
        failures += [
            f"{manifest['kind']}/{k8s.name_of(manifest)}: {list(error.path)}: {error.message}"
            for error in validator.iter_errors(manifest)
        ]
    assert not failures, "\n".join(failures)


def test_the_validators_reject_broken_objects() -> None:
    """The checks above can fail: a typo'd field and a bad value are caught."""
    deployment = copy.deepcopy(k8s.one(k8s.render("prod"), "Deployment", "crm-loyalty-api"))
    _main_container(deployment)["readinesProbe"] = _main_container(deployment).pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)

    scaled = copy.deepcopy(k8s.one(k8s.render("prod"), "ScaledObject", "crm-loyalty-worker"))
    scaled["spec"]["maxReplicaCount"] = 0
    schema = k8s.crd_schema("scaledobject_v1alpha1.json")
    assert list(jsonschema.Draft7Validator(schema).iter_errors(scaled))

    dev = copy.deepcopy(k8s.render("dev"))
    kafka_topic = next(obj for obj in dev if obj["kind"] == "KafkaTopic")
    kafka_topic["spec"]["partitionz"] = 4
    schema = k8s.crd_schema("kafkatopic_v1beta2.json")
    assert list(jsonschema.Draft7Validator(schema).iter_errors(kafka_topic))


# ---- the app: ports, probes, routes, Ingress ----------------------------------------


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
    container = _main_container(_deployment(objects, service, "api"))
    assert container["args"] == ["serve", service]
    assert _port(container, "http") == settings.port
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
    deployment = _deployment(objects, service, "api")
    api = k8s.one(objects, "Service", f"crm-{service}-api")
    assert k8s.selects(api["spec"]["selector"], k8s.pod_labels(deployment))
    assert k8s.selects(deployment["spec"]["selector"], k8s.pod_labels(deployment))
    # The Service must not also select another service's pods, or a worker's.
    others = [d for d in k8s.of_kind(objects, "Deployment") if d is not deployment]
    assert not any(k8s.selects(api["spec"]["selector"], k8s.pod_labels(d)) for d in others)
    container = _main_container(deployment)
    for port in api["spec"]["ports"]:
        target = port["targetPort"]
        number = _port(container, target) if isinstance(target, str) else target
        assert number == _port(container, "http")


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
    container = _main_container(_deployment(objects, service, "worker"))
    assert container["args"] == ["worker", service]
    assert _port(container, "metrics") == settings.metrics_port
    for probe in ("livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    metrics = k8s.one(objects, "Service", f"crm-{service}-worker")
    assert [p["targetPort"] for p in metrics["spec"]["ports"]] == ["metrics"]


async def test_worker_probe_and_scrape_paths_are_served(objects: tuple[Manifest, ...]) -> None:
    """The worker's own probe server answers the liveness path and the scrape path."""
    container = _main_container(_deployment(objects, "loyalty", "worker"))
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
            init = k8s.pod_template(_deployment(objects, service, role))["spec"]["initContainers"]
            assert [c["args"] for c in init] == [["migrate", service]]
    job = k8s.one(objects, "Job", "crm-migrate")
    spec = k8s.pod_template(job)["spec"]
    assert [c["args"] for c in spec["initContainers"]] == [["migrate"]]
    assert [c["args"] for c in spec["containers"]] == [["topics", "ensure"]]


# ---- settings -----------------------------------------------------------------------


def _crm_containers(objects: tuple[Manifest, ...]) -> Iterator[tuple[str, Manifest]]:
    for workload in k8s.workloads(objects, crm_only=True):
        for container in k8s.containers(workload):
            yield f"{k8s.name_of(workload)}/{container['name']}", container


def test_every_variable_set_is_a_known_setting(objects: tuple[Manifest, ...]) -> None:
    known = known_environment_variables()
    unknown = set(k8s.settings_data(objects)) - known
    for where, container in _crm_containers(objects):
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
    for where, container in _crm_containers(objects):
        env = k8s.environment(container, objects)
        for name in REQUIRED_IN_PRODUCTION:
            source = env.get(name)
            if source is None or source.optional:
                missing.append(f"{where}: {name}")
    assert not missing, missing


def test_secrets_are_only_references(objects: tuple[Manifest, ...]) -> None:
    for secret in k8s.of_kind(objects, "Secret"):
        assert not secret.get("data") and not secret.get("stringData"), k8s.name_of(secret)
    assert not SECRET_SETTINGS & set(k8s.settings_data(objects))
    for where, container in _crm_containers(objects):
        for name, source in k8s.environment(container, objects).items():
            if name in SECRET_SETTINGS:
                assert source.origin == "secret", f"{where}: {name} must come from a Secret"
            if source.origin == "secret":
                assert (source.secret, source.key) == ("crm-secrets", name), where
    for workload in k8s.workloads(objects):
        for container in k8s.containers(workload):
            for entry in container.get("env", []):
                if re.search("PASSWORD|SECRET|TOKEN|KEYS", entry["name"]):
                    assert "value" not in entry, f"{k8s.name_of(workload)}: {entry['name']}"


# ---- security, resources, shutdown --------------------------------------------------


def test_every_container_is_locked_down(objects: tuple[Manifest, ...]) -> None:
    for workload in k8s.workloads(objects):
        pod = k8s.pod_template(workload)["spec"]
        assert pod.get("automountServiceAccountToken") is False, k8s.name_of(workload)
        pod_context = pod.get("securityContext", {})
        assert pod_context.get("seccompProfile", {}).get("type") == "RuntimeDefault"
        for container in k8s.containers(workload):
            where = f"{k8s.name_of(workload)}/{container['name']}"
            context = {**pod_context, **container.get("securityContext", {})}
            assert context.get("runAsNonRoot") is True, where
            assert int(context.get("runAsUser", 0)) > 0, where
            assert context.get("readOnlyRootFilesystem") is True, where
            assert context.get("allowPrivilegeEscalation") is False, where
            assert "ALL" in context.get("capabilities", {}).get("drop", []), where
            assert not context.get("capabilities", {}).get("add"), where
            for bound in ("requests", "limits"):
                assert set(container["resources"][bound]) >= {"cpu", "memory"}, where


def test_crm_pods_write_only_to_an_empty_dir_at_tmp(objects: tuple[Manifest, ...]) -> None:
    for workload in k8s.workloads(objects, crm_only=True):
        volumes = {v["name"]: v for v in k8s.pod_template(workload)["spec"]["volumes"]}
        for container in k8s.containers(workload):
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], k8s.name_of(workload)
            assert (
                container["image"] == k8s.pod_template(workload)["spec"]["containers"][0]["image"]
            )


def test_pods_outlive_their_shutdown_grace(
    objects: tuple[Manifest, ...], settings: Settings
) -> None:
    assert settings.shutdown_grace_seconds > 0
    for workload in k8s.workloads(objects, crm_only=True):
        if workload["kind"] == "Job":
            continue
        pod = k8s.pod_template(workload)["spec"]
        pre_stop = _main_container(workload).get("lifecycle", {}).get("preStop", {})
        sleep = int(pre_stop.get("sleep", {}).get("seconds", 0))
        grace = int(pod["terminationGracePeriodSeconds"])
        assert grace > settings.shutdown_grace_seconds + sleep, k8s.name_of(workload)


# ---- scaling and topics -------------------------------------------------------------


def test_worker_scaling_stays_within_the_partitions(
    objects: tuple[Manifest, ...], settings: Settings, overlay: str
) -> None:
    scaled = {
        so["spec"]["scaleTargetRef"]["name"]: so for so in k8s.of_kind(objects, "ScaledObject")
    }
    expected = {f"crm-{service}-worker" for service in CONSUMING}
    assert set(scaled) == (expected if overlay == "prod" else set())
    for target, scaled_object in scaled.items():
        service = target.removeprefix("crm-").removesuffix("-worker")
        spec = scaled_object["spec"]
        assert spec["maxReplicaCount"] <= settings.kafka_partitions
        assert spec["minReplicaCount"] <= spec["maxReplicaCount"]
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "kafka"
        assert trigger["metadata"]["consumerGroup"] == f"crm.{service}"
        assert trigger["metadata"]["bootstrapServers"] == settings.kafka_bootstrap_servers
        k8s.one(objects, "Deployment", target)
        if "authenticationRef" in trigger:
            k8s.one(objects, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    relay = _deployment(objects, "contacts", "worker")
    assert 1 <= relay["spec"]["replicas"] <= 2


def test_apis_autoscale_in_prod_only(objects: tuple[Manifest, ...], overlay: str) -> None:
    hpas = {
        h["spec"]["scaleTargetRef"]["name"]: h
        for h in k8s.of_kind(objects, "HorizontalPodAutoscaler")
    }
    if overlay == "dev":
        assert not hpas
        assert all(d["spec"]["replicas"] == 1 for d in k8s.of_kind(objects, "Deployment"))
        return
    assert set(hpas) == {f"crm-{service}-api" for service in SERVICES}
    for name, hpa in hpas.items():
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert (
            hpa["spec"]["minReplicas"] == k8s.one(objects, "Deployment", name)["spec"]["replicas"]
        )
    budgets = {k8s.name_of(p) for p in k8s.of_kind(objects, "PodDisruptionBudget")}
    assert budgets >= {f"crm-{s}-{r}" for s in SERVICES for r in ("api", "worker")}


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
    for where, container in _crm_containers(objects):
        env = k8s.environment(container, objects)
        if overlay == "prod":
            assert settings.kafka_sasl_mechanism
            assert all(env[name].origin == "secret" for name in sasl), where
        else:
            assert not set(sasl) & set(env), where


# ---- network policies ---------------------------------------------------------------


def _policies(objects: tuple[Manifest, ...], labels: dict[str, str], kind: str) -> list[Manifest]:
    return [
        p
        for p in k8s.of_kind(objects, "NetworkPolicy")
        if kind in p["spec"].get("policyTypes", [])
        and k8s.selects(p["spec"]["podSelector"], labels)
    ]


def _ports(rules: list[Manifest]) -> set[Any]:
    return {port["port"] for rule in rules for port in rule.get("ports", [])}


def test_network_policies_deny_by_default_and_allow_only_the_documented(
    objects: tuple[Manifest, ...],
) -> None:
    data_ports = {53, 5432, 9092, 9093}
    for workload in k8s.workloads(objects, crm_only=True):
        labels = k8s.pod_labels(workload)
        where = k8s.name_of(workload)
        egress = _policies(objects, labels, "Egress")
        ingress = _policies(objects, labels, "Ingress")
        assert any(not p["spec"].get("egress") for p in egress), f"{where}: no default deny"
        assert any(not p["spec"].get("ingress") for p in ingress), f"{where}: no default deny"
        egress_rules = [r for p in egress for r in p["spec"].get("egress", [])]
        assert all(rule.get("ports") for rule in egress_rules), f"{where}: egress without ports"
        allowed: set[int | str] = set(data_ports)
        component = labels["app.kubernetes.io/component"]
        service = labels.get("crm.example/service")
        if (component, service) == ("api", "contacts"):
            allowed.add("http")  # GDPR export gathers parts from the other APIs
        if (component, service) == ("worker", "messaging"):
            allowed |= {25, 465, 587, 443}  # SMTP and HTTP providers
        egress_ports = _ports(egress_rules)
        assert egress_ports <= allowed, f"{where}: egress to {egress_ports - allowed}"
        ingress_rules = [r for p in ingress for r in p["spec"].get("ingress", [])]
        expected_in = {"api": {"http"}, "worker": {"metrics"}}.get(component, set())
        assert _ports(ingress_rules) == expected_in, where
        for rule in ingress_rules:
            for peer in rule["from"]:
                namespace = peer.get("namespaceSelector", {}).get("matchLabels", {})
                name = namespace.get("kubernetes.io/metadata.name")
                pod = peer.get("podSelector", {}).get("matchLabels", {})
                assert (
                    name in {"ingress-nginx", "monitoring"}
                    or pod.get("crm.example/service") == "contacts"
                ), f"{where}: ingress from {peer}"
                if name == "ingress-nginx":
                    assert component == "api", where


def test_data_stores_are_reached_by_address(objects: tuple[Manifest, ...], overlay: str) -> None:
    """dev: the in-cluster PostgreSQL and Kafka pods; prod: the managed services' CIDRs."""
    policy = k8s.one(objects, "NetworkPolicy", "crm-egress-datastores")
    peer_kind = "ipBlock" if overlay == "prod" else "podSelector"
    for rule in policy["spec"]["egress"]:
        assert rule["to"] and all(set(peer) == {peer_kind} for peer in rule["to"]), rule
    if overlay == "dev":
        for rule in policy["spec"]["egress"]:
            (peer,) = rule["to"]
            targets = [
                w
                for w in k8s.workloads(objects)
                if k8s.selects(peer["podSelector"], k8s.pod_labels(w))
            ]
            if targets:  # the PostgreSQL StatefulSet; Strimzi makes the broker pods
                assert [k8s.name_of(w) for w in targets] == ["crm-postgres"]


# ---- alerts -------------------------------------------------------------------------


def _anchors(markdown: str) -> set[str]:
    explicit = set(re.findall(r"""(?:id|name)=["']([\w-]+)["']""", markdown))
    headings = re.findall(r"^#+\s+(.+?)\s*$", markdown, flags=re.MULTILINE)
    slugs = {re.sub(r"[^\w\- ]", "", h.lower()).strip().replace(" ", "-") for h in headings}
    return explicit | slugs


def test_alerts_cover_the_signals_and_name_their_runbooks(objects: tuple[Manifest, ...]) -> None:
    rules = list(k8s.alerts(objects))
    expressions = " ".join(str(rule["expr"]) for rule in rules)
    for signal in (
        "kafka_consumergroup_lag",
        "crm_outbox_oldest_unpublished_age_seconds",
        'crm_events_consumed_total{outcome="dead_lettered"}',
        'crm_http_requests_total{status=~"5..',
        "histogram_quantile(0.99",
        "crm_http_request_duration_seconds_bucket",
    ):
        assert signal in expressions, signal
    operations = k8s.ROOT / "docs" / "operations.md"
    documented = _anchors(operations.read_text()) if operations.exists() else RUNBOOKS
    for rule in rules:
        url = rule["annotations"]["runbook_url"]
        page, _, anchor = url.partition("#")
        assert page.endswith("docs/operations.md") and anchor in RUNBOOKS, url
        assert anchor in documented, f"{url}: no such anchor in docs/operations.md"
