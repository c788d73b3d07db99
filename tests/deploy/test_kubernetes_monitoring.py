"""deploy/k8s: the alerts read signals that exist and link runbooks that exist.

Every signal the PrometheusRule needs has a source: the crm processes' own metrics
(ServiceMonitors) and, for consumer lag, the Kafka exporter (a PodMonitor in dev; in prod
an exporter outside these manifests, deploy/k8s/README.md).
"""

from __future__ import annotations

import re

from tests.deploy import k8s_support as k8s
from tests.deploy.k8s_support import CONSUMING, Manifest, needs_kubectl

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

pytestmark = needs_kubectl


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


def test_the_lag_alert_has_its_exporter_scraped(
    objects: tuple[Manifest, ...], overlay: str
) -> None:
    """dev: a PodMonitor selects the pod Strimzi runs for `kafkaExporter`, on its metrics port.

    Strimzi labels the exporter pod strimzi.io/kind=Kafka, strimzi.io/cluster=<cluster>
    and strimzi.io/name=<cluster>-kafka-exporter, and names its port tcp-prometheus. prod's
    exporter runs outside these manifests (deploy/k8s/README.md).
    """
    monitors = k8s.of_kind(objects, "PodMonitor")
    if overlay == "prod":
        assert not k8s.of_kind(objects, "Kafka") and not monitors
        return
    (kafka,) = k8s.of_kind(objects, "Kafka")
    cluster = k8s.name_of(kafka)
    exporter_pod = {
        "strimzi.io/kind": "Kafka",
        "strimzi.io/cluster": cluster,
        "strimzi.io/name": f"{cluster}-kafka-exporter",
        "strimzi.io/component-type": "kafka-exporter",
    }
    (monitor,) = monitors
    spec = monitor["spec"]
    assert k8s.selects(spec["selector"], exporter_pod)
    assert not k8s.selects(spec["selector"], {**exporter_pod, "strimzi.io/name": cluster})
    namespaces = spec.get("namespaceSelector", {})
    assert not namespaces.get("any"), "the exporter is in the overlay's own namespace"
    assert namespaces.get("matchNames", [monitor["metadata"]["namespace"]]) == [
        monitor["metadata"]["namespace"]
    ]
    assert [e["port"] for e in spec["podMetricsEndpoints"]] == ["tcp-prometheus"]
    # The exporter reports the groups the alert sums (every crm consumer group).
    exporter = kafka["spec"]["kafkaExporter"]
    for service in CONSUMING:
        assert re.fullmatch(exporter.get("groupRegex", ".*"), f"crm.{service}"), service
    (lag,) = [r for r in k8s.alerts(objects) if "kafka_consumergroup_lag" in str(r["expr"])]
    assert 'consumergroup=~"crm' in str(lag["expr"])
