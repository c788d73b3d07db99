"""deploy/k8s: replica counts, autoscalers, shutdown and the PostgreSQL connection budget.

Worker replicas stay within the partition count; the autoscalers' maxima keep the worst
case of database connections (tests/deploy/k8s_connections.py, the formula of
docs/operations.md) within the budget the overlay's Namespace states, and both documents
state the same figures; pods outlive their shutdown grace.
"""

from __future__ import annotations

import re

from shared.settings import Settings
from tests.deploy import k8s_connections as connections
from tests.deploy import k8s_support as k8s
from tests.deploy.k8s_support import CONSUMING, SERVICES, Manifest, needs_kubectl

pytestmark = needs_kubectl


def test_pods_outlive_their_shutdown_grace(
    objects: tuple[Manifest, ...], settings: Settings
) -> None:
    assert settings.shutdown_grace_seconds > 0
    for workload in k8s.workloads(objects, crm_only=True):
        if workload["kind"] == "Job":
            continue
        pod = k8s.pod_template(workload)["spec"]
        pre_stop = k8s.main_container(workload).get("lifecycle", {}).get("preStop", {})
        sleep = int(pre_stop.get("sleep", {}).get("seconds", 0))
        grace = int(pod["terminationGracePeriodSeconds"])
        assert grace > settings.shutdown_grace_seconds + sleep, k8s.name_of(workload)


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
    relay = k8s.deployment(objects, "contacts", "worker")
    assert 1 <= relay["spec"]["replicas"] <= 2


def test_apis_autoscale_in_prod_only(
    objects: tuple[Manifest, ...], settings: Settings, overlay: str
) -> None:
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
        assert hpa["spec"]["maxReplicas"] <= settings.kafka_partitions, name
        assert (
            hpa["spec"]["minReplicas"] == k8s.one(objects, "Deployment", name)["spec"]["replicas"]
        )
    budgets = {k8s.name_of(p) for p in k8s.of_kind(objects, "PodDisruptionBudget")}
    assert budgets >= {f"crm-{s}-{r}" for s in SERVICES for r in ("api", "worker")}


def test_worst_case_connections_fit_the_stated_budget(objects: tuple[Manifest, ...]) -> None:
    """Every crm process at its autoscaler's maximum, mid roll-out, fits max_connections."""
    budget = connections.budget(objects)
    assert 0 <= budget.reserved < budget.max_connections
    rows = connections.worst_case(objects)
    names = {row.name for row in rows}
    assert {f"crm-{s}-{r}" for s in SERVICES for r in ("api", "worker")} <= names
    assert connections.total(rows) <= budget.available, (
        f"{budget}: at worst\n{connections.describe(rows)}"
    )


def test_dev_postgres_has_the_stated_max_connections() -> None:
    """dev runs its own server: its `-c max_connections` is the budget the Namespace states.

    (prod's server is managed outside these manifests: its figure is stated, not set.)
    """
    objects = k8s.render("dev")
    (container,) = k8s.containers(k8s.one(objects, "StatefulSet", "crm-postgres"))
    args = " ".join(container["args"])
    match = re.search(r"max_connections=(\d+)", args)
    assert match, args
    assert int(match.group(1)) == connections.budget(objects).max_connections


def _section(markdown: str, heading: str) -> str:
    """The text under a heading, up to the next heading."""
    assert heading in markdown, heading
    section = markdown.split(heading, 1)[1]
    return re.split(r"^#{1,3} ", section, maxsplit=1, flags=re.MULTILINE)[0]


def _stated_total(section: str, heading: str) -> int:
    """The bold total of the connection table in a section of a Markdown document."""
    totals = re.findall(r"\*\*total at worst\*\* *\|.*?\*\*(\d+)\*\*", section)
    assert len(totals) == 1, f"{heading}: no single connection total"
    return int(totals[0])


def test_the_documents_state_the_prod_budget_and_worst_case() -> None:
    """deploy/k8s/README.md and docs/operations.md show what the prod overlay renders."""
    objects = k8s.render("prod")
    budget = connections.budget(objects)
    worst = connections.total(connections.worst_case(objects))
    readme = (k8s.K8S / "README.md").read_text()
    guide = (k8s.ROOT / "docs" / "operations.md").read_text()
    for document, heading in ((readme, "## Sizing"), (guide, "### Worked example")):
        section = _section(document, heading)
        assert _stated_total(section, heading) == worst, heading
        assert f"max_connections = {budget.max_connections}" in section, heading
        assert f"{budget.reserved} reserved" in section, heading
