"""The PostgreSQL connection budget of an overlay, from its rendered manifests.

The formula is the one in docs/operations.md ("Connections"), with the roll-out surge
added: a process holds at most 2 x CRM_DATABASE_POOL_SIZE connections (the pool plus as
much overflow, shared/db/engine.py; the relay's and the jobs' lock connections come from
that same pool), a Deployment runs at most its autoscaler's maximum plus the surge pods a
rolling update adds on top, and a `crm migrate` or an operator's one-off command needs
one connection. The budget is what the overlay's Namespace states in its annotations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from shared.settings import Settings
from tests.deploy import k8s_support as k8s
from tests.deploy.k8s_support import Manifest

MAX_CONNECTIONS = "crm.example/postgres-max-connections"
RESERVED_CONNECTIONS = "crm.example/postgres-reserved-connections"
# One operator command at a time besides the Job (`crm events replay-dead-letters`, ...).
ONE_OFF_COMMANDS = 1
CONNECTIONS_PER_COMMAND = 1


@dataclass(frozen=True)
class Budget:
    """What the Namespace says the crm pods may use of the PostgreSQL server."""

    max_connections: int
    reserved: int

    @property
    def available(self) -> int:
        return self.max_connections - self.reserved


@dataclass(frozen=True)
class Row:
    """One workload at its worst: how many processes, each with how many connections."""

    name: str
    processes: int
    per_process: int

    @property
    def connections(self) -> int:
        return self.processes * self.per_process


def budget(objects: tuple[Manifest, ...]) -> Budget:
    """The budget annotated on the overlay's Namespace."""
    (namespace,) = k8s.of_kind(objects, "Namespace")
    annotations: dict[str, str] = namespace["metadata"].get("annotations", {})
    assert MAX_CONNECTIONS in annotations, f"the Namespace states no {MAX_CONNECTIONS}"
    return Budget(
        int(annotations[MAX_CONNECTIONS]), int(annotations.get(RESERVED_CONNECTIONS, "0"))
    )


def _autoscaled_maxima(objects: tuple[Manifest, ...]) -> dict[str, int]:
    """Deployment name -> the most replicas its HPA or KEDA ScaledObject may set."""
    maxima: dict[str, int] = {}
    for hpa in k8s.of_kind(objects, "HorizontalPodAutoscaler"):
        maxima[hpa["spec"]["scaleTargetRef"]["name"]] = int(hpa["spec"]["maxReplicas"])
    for scaled in k8s.of_kind(objects, "ScaledObject"):
        target = scaled["spec"]["scaleTargetRef"]["name"]
        assert target not in maxima, f"{target}: scaled by an HPA and a ScaledObject"
        maxima[target] = int(scaled["spec"]["maxReplicaCount"])
    return maxima


def max_replicas(objects: tuple[Manifest, ...], deployment: Manifest) -> int:
    """The autoscaler's maximum, or the fixed replica count of an unscaled Deployment."""
    fixed = int(deployment["spec"].get("replicas", 1))
    return _autoscaled_maxima(objects).get(k8s.name_of(deployment), fixed)


def surge(deployment: Manifest, replicas: int) -> int:
    """Pods a rolling update adds above `replicas` (Kubernetes rounds a percentage up)."""
    strategy = deployment["spec"].get("strategy", {})
    if strategy.get("type") == "Recreate":
        return 0
    value = strategy.get("rollingUpdate", {}).get("maxSurge", "25%")
    if isinstance(value, str) and value.endswith("%"):
        return math.ceil(int(value.removesuffix("%")) * replicas / 100)
    return int(value)


def pool_size(container: Manifest, objects: tuple[Manifest, ...]) -> int:
    """CRM_DATABASE_POOL_SIZE as the container sees it: own `env`, its ConfigMaps, default."""
    name = "CRM_DATABASE_POOL_SIZE"
    for entry in container.get("env", []):
        if entry["name"] == name:
            assert "value" in entry, f"{container['name']}: {name} must be a plain value"
            return int(entry["value"])
    for source in container.get("envFrom", []):
        data = k8s.one(objects, "ConfigMap", source["configMapRef"]["name"]).get("data", {})
        if name in data:
            return int(data[name])
    default: int = Settings.model_fields["database_pool_size"].default
    return default


def worst_case(objects: tuple[Manifest, ...]) -> list[Row]:
    """Every crm process that may hold connections at once, at the autoscalers' maxima."""
    rows: list[Row] = []
    for workload in k8s.workloads(objects, crm_only=True):
        if workload["kind"] == "Job":
            parallel = int(workload["spec"].get("parallelism", 1))
            rows.append(Row(k8s.name_of(workload), parallel, CONNECTIONS_PER_COMMAND))
            continue
        assert workload["kind"] == "Deployment", k8s.name_of(workload)
        replicas = max_replicas(objects, workload)
        per_process = 2 * pool_size(k8s.main_container(workload), objects)
        rows.append(Row(k8s.name_of(workload), replicas + surge(workload, replicas), per_process))
    rows.append(Row("one-off crm command", ONE_OFF_COMMANDS, CONNECTIONS_PER_COMMAND))
    return rows


def total(rows: list[Row]) -> int:
    return sum(row.connections for row in rows)


def describe(rows: list[Row]) -> str:
    """The rows as a table, for a failing assertion's message."""
    lines = [f"{r.name}: {r.processes} x {r.per_process} = {r.connections}" for r in rows]
    return "\n".join([*lines, f"total: {total(rows)}"])
