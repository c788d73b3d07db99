"""deploy/k8s: pods are locked down, secrets stay references, traffic is denied by default.

Checked on each overlay rendered by `kubectl kustomize`: the security context and
resources of every container, the writable /tmp, where every secret setting comes from,
and the NetworkPolicies against the exceptions deploy/k8s/README.md documents.
"""

from __future__ import annotations

import re
from typing import Any

from shared.settings import SECRET_ENVIRONMENT_VARIABLES
from tests.deploy import k8s_support as k8s
from tests.deploy.k8s_support import Manifest, needs_kubectl

pytestmark = needs_kubectl


def test_secrets_are_only_references(objects: tuple[Manifest, ...]) -> None:
    for secret in k8s.of_kind(objects, "Secret"):
        assert not secret.get("data") and not secret.get("stringData"), k8s.name_of(secret)
    assert not SECRET_ENVIRONMENT_VARIABLES & set(k8s.settings_data(objects))
    for where, container in k8s.crm_containers(objects):
        for name, source in k8s.environment(container, objects).items():
            if name in SECRET_ENVIRONMENT_VARIABLES:
                assert source.origin == "secret", f"{where}: {name} must come from a Secret"
            if source.origin == "secret":
                assert (source.secret, source.key) == ("crm-secrets", name), where
    for workload in k8s.workloads(objects):
        for container in k8s.containers(workload):
            for entry in container.get("env", []):
                if re.search("PASSWORD|SECRET|TOKEN|KEYS", entry["name"]):
                    assert "value" not in entry, f"{k8s.name_of(workload)}: {entry['name']}"


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
