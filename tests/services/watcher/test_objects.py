"""Validating objects and converting them into facts (shared by both sources)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from knm.core.events.facts import (
    ContainerPortSpec,
    ControllerObserved,
    NodeObserved,
    OwnerReference,
    PodObserved,
    ServiceObserved,
    ServicePortSpec,
)
from services.watcher.errors import BadManifestError, InvalidObjectError
from services.watcher.manifests import declared_objects, load_documents
from services.watcher.objects import Controller, Pod, Service, fact_of, parse_object
from tests.services.watcher.builders import (
    Manifest,
    apps,
    namespace,
    pod,
    rc,
    service,
    write_yaml,
)


def parsed(raw: Manifest) -> Any:
    result = parse_object(raw)
    assert result is not None
    return result.object


def refused(tmp_path: Path, document: Manifest) -> str:
    """The message of the error the document makes, after `<file>: document 1: `."""
    path = write_yaml(tmp_path / "objects.yaml", document)
    with pytest.raises(BadManifestError) as caught:
        declared_objects(load_documents([path]))
    message = caught.value.message
    assert "\n" not in message
    prefix = f"{path}: document 1: "
    assert message.startswith(prefix)
    return message.removeprefix(prefix)


def with_spec(document: Manifest, **spec: Any) -> Manifest:
    return {**document, "spec": {**document["spec"], **spec}}


def with_metadata(document: Manifest, **metadata: Any) -> Manifest:
    return {**document, "metadata": {**document["metadata"], **metadata}}


# ---- metadata ----------------------------------------------------------------------------


def test_namespace_defaults_to_default() -> None:
    assert parsed(pod("web")).meta.namespace == "default"
    assert parsed(pod("web", namespace="shop")).meta.namespace == "shop"
    assert parsed(namespace("shop")).meta.namespace == ""


def test_a_missing_name(tmp_path: Path) -> None:
    assert refused(tmp_path, {"apiVersion": "v1", "kind": "Pod", "metadata": {}}) == (
        "Pod: metadata.name is not set"
    )


def test_generate_name_is_not_supported(tmp_path: Path) -> None:
    document = {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "web-"}}

    assert refused(tmp_path, document) == (
        "Pod: metadata.name is not set (generateName is not supported)"
    )


def test_a_name_that_is_not_a_string(tmp_path: Path) -> None:
    assert refused(tmp_path, with_metadata(pod("x"), name=42)) == (
        "Pod: metadata.name must be a string, not a number"
    )


def test_metadata_that_is_not_a_map(tmp_path: Path) -> None:
    assert refused(tmp_path, {"apiVersion": "v1", "kind": "Pod", "metadata": ["a"]}) == (
        "Pod: metadata must be a map, not a list"
    )


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (pod("Web_1"), "Pod default/Web_1: name 'Web_1' must be a DNS subdomain"),
        (rc("-web"), "ReplicationController default/-web: name '-web' must be a DNS subdomain"),
        (namespace("My.NS"), "Namespace My.NS: namespace name 'My.NS' must be a DNS label"),
        (service("1web"), "Service default/1web: service name '1web' must be a DNS-1035 label"),
        (pod("web", namespace="Shop"), "Pod Shop/web: namespace name 'Shop' must be a DNS label"),
    ],
)
def test_invalid_names(tmp_path: Path, document: Manifest, reason: str) -> None:
    assert refused(tmp_path, document).startswith(reason)


def test_invalid_labels(tmp_path: Path) -> None:
    assert refused(tmp_path, pod("web", labels={"bad key!": "x"})).startswith(
        "Pod default/web: metadata.labels: label key 'bad key!': name must be"
    )
    assert refused(tmp_path, pod("web", labels={"tier": "-front"})).startswith(
        "Pod default/web: metadata.labels: label value '-front' must be"
    )


@pytest.mark.parametrize("field", ["labels", "annotations"])
def test_labels_and_annotations_must_map_strings_to_strings(tmp_path: Path, field: str) -> None:
    assert refused(tmp_path, with_metadata(pod("web"), **{field: ["a"]})) == (
        f"Pod default/web: metadata.{field} must be a map, not a list"
    )
    assert refused(tmp_path, with_metadata(pod("web"), **{field: {"version": 2}})) == (
        f"Pod default/web: metadata.{field} must map strings to strings; 'version': 2 does not"
    )


def test_template_labels_are_validated_too(tmp_path: Path) -> None:
    assert refused(tmp_path, rc("web", labels={"name": "a b"})).startswith(
        "ReplicationController default/web: spec.template.metadata.labels: label value 'a b'"
    )


# ---- selectors ---------------------------------------------------------------------------


def test_rc_selector_defaults_to_template_labels() -> None:
    controller = parsed(rc("web", labels={"name": "web", "tier": "front"}))

    assert isinstance(controller, Controller)
    assert controller.selector == {"name": "web", "tier": "front"}


def test_rc_selector_given_must_match_the_template(tmp_path: Path) -> None:
    given = with_spec(rc("web", labels={"name": "web"}), selector={"name": "web"})
    assert parsed(given).selector == {"name": "web"}

    other = with_spec(rc("web", labels={"name": "web"}), selector={"name": "db"})
    assert refused(tmp_path, other) == (
        "ReplicationController default/web: spec.selector does not match the template's labels"
    )


def test_rc_without_selector_or_template_labels(tmp_path: Path) -> None:
    assert refused(tmp_path, rc("web", labels={})) == (
        "ReplicationController default/web: spec.selector is empty and the template has no labels"
    )


@pytest.mark.parametrize(
    ("document", "field"),
    [
        (with_spec(rc("web"), selector="name=web"), "spec.selector must be a map, not a string"),
        (with_spec(service("web"), selector=["app"]), "spec.selector must be a map, not a list"),
        (
            with_spec(apps("Deployment", "web"), selector={"matchLabels": ["app"]}),
            "spec.selector.matchLabels must be a map, not a list",
        ),
        (
            with_spec(apps("ReplicaSet", "web"), selector=["app"]),
            "spec.selector must be a map, not a list",
        ),
    ],
)
def test_selectors_must_be_maps(tmp_path: Path, document: Manifest, field: str) -> None:
    assert refused(tmp_path, document).endswith(f"/web: {field}")


def test_apps_selector_is_required(tmp_path: Path) -> None:
    document = apps("Deployment", "web")
    del document["spec"]["selector"]

    assert refused(tmp_path, document) == "Deployment default/web: spec.selector is required"


def test_apps_selector_must_match_the_template_labels(tmp_path: Path) -> None:
    document = with_spec(apps("StatefulSet", "db"), selector={"matchLabels": {"app": "web"}})

    assert refused(tmp_path, document) == (
        "StatefulSet default/db: spec.selector does not match the template's labels"
    )


def test_match_expressions_are_ignored_with_a_warning(tmp_path: Path) -> None:
    expressions = [{"key": "tier", "operator": "In", "values": ["a"]}]
    document = with_spec(
        apps("Deployment", "web"),
        selector={"matchLabels": {"app": "web"}, "matchExpressions": expressions},
    )
    path = write_yaml(tmp_path / "d.yaml", document)

    declarations = declared_objects(load_documents([path]))

    assert declarations.objects[0].object.selector == {"app": "web"}  # type: ignore[union-attr]
    assert declarations.warnings == (
        f"{path}: document 1: Deployment default/web: spec.selector.matchExpressions is ignored "
        "(knm reads matchLabels only)",
    )


def test_match_expressions_alone_are_refused(tmp_path: Path) -> None:
    expressions = [{"key": "app", "operator": "Exists"}]
    document = with_spec(apps("DaemonSet", "agent"), selector={"matchExpressions": expressions})

    assert refused(tmp_path, document) == (
        "DaemonSet default/agent: spec.selector.matchLabels is empty; "
        "knm selects pods by matchLabels"
    )


# ---- numbers -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [-1, "3", 1.5, True])
def test_replicas_must_be_a_non_negative_integer(tmp_path: Path, value: object) -> None:
    assert refused(tmp_path, with_spec(rc("web"), replicas=value)) == (
        f"ReplicationController default/web: spec.replicas must be a non-negative integer, "
        f"not {value!r}"
    )


def test_replicas_default_to_one_and_daemonsets_have_none() -> None:
    assert parsed(rc("web", replicas=None)).replicas == 1
    assert parsed(with_spec(rc("web"), replicas=None)).replicas == 1
    assert parsed(apps("Deployment", "web", replicas=0)).replicas == 0
    assert parsed(apps("DaemonSet", "agent")).replicas is None


@pytest.mark.parametrize("port", [0, 65536, "80", True, None])
def test_service_ports_must_be_valid(tmp_path: Path, port: object) -> None:
    assert refused(tmp_path, service("web", ports=[{"port": port}])) == (
        f"Service default/web: spec.ports[0].port must be an integer from 1 to 65535, not {port!r}"
    )


@pytest.mark.parametrize("target", [0, 70000, "", 8.5])
def test_target_ports_must_be_valid(tmp_path: Path, target: object) -> None:
    reason = refused(tmp_path, service("web", ports=[{"port": 80, "targetPort": target}]))

    assert reason.startswith("Service default/web: spec.ports[0].targetPort must be")


def test_container_ports_must_be_valid(tmp_path: Path) -> None:
    document = pod("web")
    document["spec"]["containers"].append({"name": "b", "ports": [{"containerPort": "http"}]})

    assert refused(tmp_path, document) == (
        "Pod default/web: spec.containers[1].ports[0].containerPort must be an integer "
        "from 1 to 65535, not 'http'"
    )


def test_protocols_must_be_known(tmp_path: Path) -> None:
    assert refused(tmp_path, service("web", ports=[{"port": 80, "protocol": "tcp"}])) == (
        "Service default/web: spec.ports[0].protocol 'tcp' is not one of SCTP, TCP, UDP"
    )


@pytest.mark.parametrize("value", ["10.0.0.256", "fd00::1", "10.0.0.0/24", 5, "none"])
def test_cluster_ip_must_be_ipv4_or_none(tmp_path: Path, value: object) -> None:
    assert refused(tmp_path, service("web", clusterIP=value)) == (
        f'Service default/web: spec.clusterIP must be an IPv4 address, "" or "None", not {value!r}'
    )


def test_host_network_must_be_a_boolean(tmp_path: Path) -> None:
    document = with_spec(pod("web"), hostNetwork="yes")

    assert refused(tmp_path, document) == (
        "Pod default/web: spec.hostNetwork must be true or false, not 'yes'"
    )


def test_service_type_must_be_known(tmp_path: Path) -> None:
    assert refused(tmp_path, service("web", type="Magic")).startswith(
        "Service default/web: spec.type 'Magic' is not one of"
    )


# ---- services ----------------------------------------------------------------------------


def test_service_fields() -> None:
    ports: list[Manifest] = [
        {"port": 80, "targetPort": 8080, "name": "http"},
        {"port": 53, "protocol": "UDP", "targetPort": "dns"},
        {"port": 9000},
    ]
    svc = parsed(service("web", selector={"app": "web"}, ports=ports, clusterIP="10.254.0.9"))

    assert isinstance(svc, Service)
    assert svc.selector == {"app": "web"}
    assert svc.ports == (
        ServicePortSpec(port=80, protocol="TCP", target_port=8080, name="http"),
        ServicePortSpec(port=53, protocol="UDP", target_port="dns", name=None),
        ServicePortSpec(port=9000, protocol="TCP", target_port=None, name=None),
    )
    assert (svc.cluster_ip, svc.headless, svc.type) == ("10.254.0.9", False, "ClusterIP")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, (None, False, "ClusterIP")),
        ({"clusterIP": ""}, (None, False, "ClusterIP")),
        ({"clusterIP": "None"}, (None, True, "ClusterIP")),
        ({"type": "NodePort", "clusterIP": "10.254.1.1"}, ("10.254.1.1", False, "NodePort")),
        ({"type": "ExternalName", "externalName": "db.example.com"}, (None, True, "ExternalName")),
    ],
)
def test_cluster_ip_and_headless(spec: Manifest, expected: tuple[object, ...]) -> None:
    svc = parsed(service("web", **spec))

    assert (svc.cluster_ip, svc.headless, svc.type) == expected


def test_a_service_without_selector_has_none() -> None:
    assert parsed(service("web")).selector is None


# ---- pods --------------------------------------------------------------------------------


def test_pod_spec_fields() -> None:
    document = pod("web", node_name="node-7")
    document["spec"]["hostNetwork"] = True
    document["spec"]["containers"] = [
        {"name": "a", "ports": [{"containerPort": 80, "name": "http"}]},
        {"name": "b"},
        {"name": "c", "ports": [{"containerPort": 53, "protocol": "UDP"}]},
    ]

    web = parsed(document)

    assert isinstance(web, Pod)
    assert web.spec.node_name == "node-7"
    assert web.spec.host_network is True
    assert web.spec.ports == (
        ContainerPortSpec(port=80, protocol="TCP", name="http"),
        ContainerPortSpec(port=53, protocol="UDP", name=None),
    )


# ---- live objects into facts -------------------------------------------------------------


def live_pod(**status: Any) -> Manifest:
    """A pod as the API server serves it: uid, resourceVersion, owners, status."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web-6d4cf56db6-x7k2p",
            "namespace": "shop",
            "uid": "0f2a6c1e-0000-4000-8000-000000000001",
            "resourceVersion": "4711",
            "labels": {"app": "web", "pod-template-hash": "6d4cf56db6"},
            "annotations": {"knm.io/uses": "db"},
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Node", "name": "n", "uid": "u-node"},
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "web-6d4cf56db6",
                    "uid": "u-rs",
                    "controller": True,
                },
            ],
        },
        "spec": {
            "nodeName": "worker-3",
            "containers": [{"name": "web", "ports": [{"containerPort": 8080}]}],
        },
        "status": status,
    }


def test_a_live_pod_becomes_a_pod_fact() -> None:
    conditions = [
        {"type": "Initialized", "status": "True"},
        {"type": "Ready", "status": "True"},
    ]
    web = parsed(live_pod(phase="Running", conditions=conditions))

    assert web.meta.resource_version == "4711"
    assert fact_of(web) == PodObserved(
        uid="0f2a6c1e-0000-4000-8000-000000000001",
        namespace="shop",
        name="web-6d4cf56db6-x7k2p",
        node="worker-3",
        labels={"app": "web", "pod-template-hash": "6d4cf56db6"},
        annotations={"knm.io/uses": "db"},
        host_network=False,
        phase="Running",
        ready=True,
        owners=(OwnerReference(kind="ReplicaSet", name="web-6d4cf56db6", uid="u-rs"),),
        ports=(ContainerPortSpec(port=8080),),
    )


@pytest.mark.parametrize(
    ("status", "phase", "ready"),
    [
        ({}, "Pending", False),
        (
            {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]},
            "Running",
            False,
        ),
        ({"phase": "Succeeded"}, "Succeeded", False),
    ],
)
def test_live_pod_phase_and_readiness(status: Manifest, phase: str, ready: bool) -> None:
    fact = fact_of(parsed(live_pod(**status)))

    assert isinstance(fact, PodObserved)
    assert (fact.phase, fact.ready) == (phase, ready)


def test_without_a_controller_reference_the_first_owner_stands_in() -> None:
    document = live_pod()
    for ref in document["metadata"]["ownerReferences"]:
        ref.pop("controller", None)

    assert parsed(document).meta.owners == (OwnerReference(kind="Node", name="n", uid="u-node"),)


def test_malformed_owner_references_are_refused() -> None:
    document = live_pod()
    document["metadata"]["ownerReferences"] = [{"kind": "ReplicaSet", "name": "x"}]

    with pytest.raises(InvalidObjectError) as caught:
        parse_object(document)

    assert caught.value.message == (
        "Pod shop/web-6d4cf56db6-x7k2p: metadata.ownerReferences[0]: "
        "kind, name and uid must be non-empty strings"
    )


def test_a_live_replica_set_keeps_its_deployment_as_owner() -> None:
    document = apps("ReplicaSet", "web-6d4cf56db6", replicas=3, namespace="shop")
    document["metadata"]["uid"] = "u-rs"
    document["metadata"]["ownerReferences"] = [
        {"kind": "Deployment", "name": "web", "uid": "u-deploy", "controller": True}
    ]

    assert fact_of(parsed(document)) == ControllerObserved(
        kind="ReplicaSet",
        uid="u-rs",
        namespace="shop",
        name="web-6d4cf56db6",
        replicas=3,
        selector={"app": "web-6d4cf56db6"},
        owners=(OwnerReference(kind="Deployment", name="web", uid="u-deploy"),),
    )


def test_a_live_node_becomes_a_node_fact_with_its_internal_ip() -> None:
    document = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "worker-3", "uid": "u-node", "labels": {"zone": "a"}},
        "status": {
            "addresses": [
                {"type": "Hostname", "address": "worker-3"},
                {"type": "InternalIP", "address": "172.16.0.3"},
                {"type": "ExternalIP", "address": "203.0.113.3"},
            ]
        },
    }

    assert fact_of(parsed(document)) == NodeObserved(
        name="worker-3", uid="u-node", address="172.16.0.3", labels={"zone": "a"}
    )


def test_a_live_service_becomes_a_service_fact() -> None:
    document = service("db", namespace="shop", selector={"app": "db"}, clusterIP="10.96.0.10")
    document["metadata"]["uid"] = "u-svc"

    assert fact_of(parsed(document)) == ServiceObserved(
        uid="u-svc",
        namespace="shop",
        name="db",
        selector={"app": "db"},
        ports=(ServicePortSpec(port=80),),
        cluster_ip="10.96.0.10",
    )


def test_an_object_without_uid_has_no_fact() -> None:
    with pytest.raises(InvalidObjectError) as caught:
        fact_of(parsed(pod("web")))

    assert caught.value.message == "Pod default/web: metadata.uid is not set"


def test_other_kinds_parse_to_none() -> None:
    assert parse_object({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}) is None
    assert parse_object({"apiVersion": "batch/v1", "kind": "Job", "metadata": {}}) is None
