"""deploy/k8s: every object of every overlay validates against its schema.

Each overlay is rendered with the real `kubectl kustomize`. Built-in objects are checked
with kubernetes-validate against the schemas of Kubernetes KUBERNETES_VERSION (strict: an
unknown field fails), custom resources against the CRD schemas vendored in
deploy/k8s/schemas (their source is in deploy/k8s/schemas/README.md).
"""

from __future__ import annotations

import copy

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest

from tests.deploy import k8s_support as k8s
from tests.deploy.k8s_support import Manifest, needs_kubectl

KUBERNETES_VERSION = "1.33"

pytestmark = needs_kubectl


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
    k8s.main_container(deployment)["readinesProbe"] = k8s.main_container(deployment).pop(
        "readinessProbe"
    )
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

    pod_monitor = copy.deepcopy(k8s.one(dev, "PodMonitor", "crm-kafka-exporter"))
    pod_monitor["spec"]["podMetricsEndpoint"] = pod_monitor["spec"].pop("podMetricsEndpoints")
    schema = k8s.crd_schema("podmonitor_v1.json")
    assert list(jsonschema.Draft7Validator(schema).iter_errors(pod_monitor))
