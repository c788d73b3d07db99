"""Reading the rendered Kubernetes manifests: kustomize output, pod templates, env sources.

Kept apart from the tests so each test reads as the rule it checks. Everything here works
on the plain dicts `yaml.safe_load_all` gives for the output of `kubectl kustomize`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from crm.services import ALL_SERVICES

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
SCHEMAS = K8S / "schemas"
OVERLAYS = ("dev", "prod")

Manifest = dict[str, Any]

# Custom resources and the vendored CRD schema each is checked against.
CRD_SCHEMAS: dict[tuple[str, str], str] = {
    ("kafka.strimzi.io/v1beta2", "Kafka"): "kafka_v1beta2.json",
    ("kafka.strimzi.io/v1beta2", "KafkaNodePool"): "kafkanodepool_v1beta2.json",
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"): "kafkatopic_v1beta2.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject_v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "triggerauthentication_v1alpha1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor_v1.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor_v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule_v1.json",
}
CUSTOM_GROUPS = frozenset(api.split("/")[0] for api, _ in CRD_SCHEMAS)

WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "Job"})
CRM_LABEL = ("app.kubernetes.io/name", "crm")


def kubectl() -> str | None:
    """The kubectl binary, if this machine has one."""
    return shutil.which("kubectl")


@cache
def render(overlay: str) -> tuple[Manifest, ...]:
    """`kubectl kustomize` of one overlay, parsed; cached, the output never changes in a run."""
    binary = kubectl()
    assert binary is not None
    result = subprocess.run(
        [binary, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {overlay} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


@cache
def crd_schema(file_name: str) -> dict[str, Any]:
    """One vendored CRD schema."""
    loaded: dict[str, Any] = json.loads((SCHEMAS / file_name).read_text())
    return loaded


def is_custom(manifest: Manifest) -> bool:
    """Whether the object is a custom resource (checked against a vendored CRD schema)."""
    return str(manifest["apiVersion"]).split("/")[0] in CUSTOM_GROUPS


def name_of(manifest: Manifest) -> str:
    return str(manifest["metadata"]["name"])


def of_kind(objects: tuple[Manifest, ...], kind: str) -> list[Manifest]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: tuple[Manifest, ...], kind: str, name: str) -> Manifest:
    """The object of that kind and name; fails clearly when missing."""
    found = [obj for obj in of_kind(objects, kind) if name_of(obj) == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_template(workload: Manifest) -> Manifest:
    template: Manifest = workload["spec"]["template"]
    return template


def pod_labels(workload: Manifest) -> dict[str, str]:
    labels: dict[str, str] = pod_template(workload)["metadata"].get("labels", {})
    return labels


def is_crm(workload: Manifest) -> bool:
    """Whether the workload runs the crm image (APIs, workers, the migrate Job)."""
    key, value = CRM_LABEL
    return pod_labels(workload).get(key) == value


def workloads(objects: tuple[Manifest, ...], *, crm_only: bool = False) -> list[Manifest]:
    found = [obj for obj in objects if obj["kind"] in WORKLOAD_KINDS]
    return [obj for obj in found if is_crm(obj)] if crm_only else found


def deployment(objects: tuple[Manifest, ...], service: str, role: str) -> Manifest:
    """The Deployment of one service's API or worker (`role` is "api" or "worker")."""
    return one(objects, "Deployment", f"crm-{service}-{role}")


def main_container(workload: Manifest) -> Manifest:
    """The one container of a workload's pod (init containers aside)."""
    main: list[Manifest] = pod_template(workload)["spec"]["containers"]
    assert len(main) == 1, f"{name_of(workload)}: one container per pod"
    return main[0]


def port(container: Manifest, name: str) -> int:
    """The number of the container port with that name; fails unless there is exactly one."""
    ports = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == name]
    assert len(ports) == 1, f"{container['name']}: no single port named {name}"
    return int(ports[0])


def containers(workload: Manifest) -> list[Manifest]:
    """Init containers and containers of a workload's pod template."""
    spec = pod_template(workload)["spec"]
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def crm_containers(objects: tuple[Manifest, ...]) -> Iterator[tuple[str, Manifest]]:
    """Every container of the crm workloads, with a "workload/container" name for messages."""
    for workload in workloads(objects, crm_only=True):
        for container in containers(workload):
            yield f"{name_of(workload)}/{container['name']}", container


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a label selector (matchLabels form) selects these labels."""
    assert "matchExpressions" not in selector, "selectors here use matchLabels only"
    match: Mapping[str, str] = selector.get("matchLabels", selector)
    return all(labels.get(key) == value for key, value in match.items())


@dataclass(frozen=True)
class EnvSource:
    """Where a container's environment variable comes from."""

    name: str
    origin: str  # "value", "configmap", "secret"
    secret: str | None = None
    key: str | None = None
    optional: bool = False


def environment(container: Manifest, objects: tuple[Manifest, ...]) -> dict[str, EnvSource]:
    """Every variable a container is given: envFrom ConfigMaps first, then `env` (wins)."""
    found: dict[str, EnvSource] = {}
    for source in container.get("envFrom", []):
        assert "secretRef" not in source, "envFrom a Secret hides which keys it sets"
        config = one(objects, "ConfigMap", source["configMapRef"]["name"])
        for key in config.get("data", {}):
            found[key] = EnvSource(key, "configmap")
    for entry in container.get("env", []):
        name = entry["name"]
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None:
            found[name] = EnvSource(
                name, "secret", ref["name"], ref["key"], bool(ref.get("optional", False))
            )
        else:
            found[name] = EnvSource(name, "value")
    return found


def settings_data(objects: tuple[Manifest, ...]) -> dict[str, str]:
    """The data of the crm ConfigMap (its generated name carries a hash suffix)."""
    configs = [
        obj for obj in of_kind(objects, "ConfigMap") if name_of(obj).startswith("crm-config")
    ]
    assert len(configs) == 1, [name_of(obj) for obj in configs]
    data: dict[str, str] = configs[0]["data"]
    return data


def alerts(objects: tuple[Manifest, ...]) -> Iterator[Manifest]:
    for rule in of_kind(objects, "PrometheusRule"):
        for group in rule["spec"]["groups"]:
            yield from (entry for entry in group["rules"] if "alert" in entry)


SERVICES = tuple(service.name for service in ALL_SERVICES)
CONSUMING = frozenset({"loyalty", "referrals", "scoring", "messaging"})  # contacts: relay only

needs_kubectl = pytest.mark.skipif(
    kubectl() is None, reason="kubectl is not installed: the overlays cannot be rendered"
)
