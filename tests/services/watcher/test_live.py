"""The live source's conversion of served objects (its API calls are proven against a real
kube-apiserver in a later issue; nothing here pretends to be one)."""

from __future__ import annotations

import logging

import pytest

from knm.core.events.facts import (
    EndpointPortSpec,
    EndpointSliceObserved,
    EndpointSpec,
    IpBlockSpec,
    LabelSelectorSpec,
    NamespaceObserved,
    NetworkPolicyObserved,
    NetworkPolicyPeerSpec,
    NetworkPolicyPortSpec,
    NetworkPolicyRuleSpec,
    OwnerReference,
    PodObserved,
)
from services.watcher.live import RESOURCES, Resource, observe_item


def resource(plural: str) -> Resource:
    (found,) = [r for r in RESOURCES if r.plural == plural]
    return found


def test_every_kind_knm_reads_is_watched() -> None:
    assert [(r.api_version, r.kind) for r in RESOURCES] == [
        ("v1", "Namespace"),
        ("v1", "Node"),
        ("v1", "Pod"),
        ("v1", "ReplicationController"),
        ("apps/v1", "ReplicaSet"),
        ("apps/v1", "Deployment"),
        ("apps/v1", "StatefulSet"),
        ("apps/v1", "DaemonSet"),
        ("v1", "Service"),
        ("discovery.k8s.io/v1", "EndpointSlice"),
        ("networking.k8s.io/v1", "NetworkPolicy"),
    ]


def test_a_list_item_without_kind_is_typed_by_its_resource() -> None:
    item = {
        "metadata": {
            "name": "web-x7k2p",
            "namespace": "shop",
            "uid": "u-pod",
            "resourceVersion": "981",
            "ownerReferences": [
                {"kind": "ReplicaSet", "name": "web-5d8", "uid": "u-rs", "controller": True}
            ],
        },
        "spec": {"nodeName": "worker-1", "containers": [{"name": "web"}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }

    found = observe_item(item, resource=resource("pods"))

    assert found is not None
    assert (found.key, found.partition_key, found.source_version) == (
        "Pod/shop/web-x7k2p",
        "shop",
        "981",
    )
    assert found.event == PodObserved(
        uid="u-pod",
        namespace="shop",
        name="web-x7k2p",
        node="worker-1",
        phase="Running",
        ready=True,
        owners=(OwnerReference(kind="ReplicaSet", name="web-5d8", uid="u-rs"),),
    )


def test_a_namespace_item() -> None:
    item = {"metadata": {"name": "shop", "uid": "u-ns", "resourceVersion": "7"}}

    found = observe_item(item, resource=resource("namespaces"))

    assert found is not None
    assert found.event == NamespaceObserved(name="shop", uid="u-ns")
    assert (found.key, found.partition_key) == ("Namespace/shop", "shop")


def test_an_object_knm_refuses_is_skipped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    item = {
        "metadata": {"name": "dual", "namespace": "shop", "uid": "u-svc"},
        "spec": {"clusterIP": "fd00::10", "ports": [{"port": 80}]},
    }

    with caplog.at_level(logging.WARNING, logger="knm.watcher"):
        assert observe_item(item, resource=resource("services")) is None

    assert [r.getMessage() for r in caplog.records] == [
        'skipped: Service shop/dual: spec.clusterIP must be an IPv4 address, "" or "None", '
        "not 'fd00::10'"
    ]


def test_an_endpoint_slice_item() -> None:
    item = {
        "metadata": {
            "name": "web-abc12",
            "namespace": "shop",
            "uid": "u-slice",
            "resourceVersion": "44",
            "labels": {"kubernetes.io/service-name": "web"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {
                "addresses": ["10.0.0.5"],
                "conditions": {"ready": True, "serving": True, "terminating": False},
                "nodeName": "node-1",
                "targetRef": {"kind": "Pod", "name": "web-1", "namespace": "shop", "uid": "u1"},
            },
            # Unknown conditions read as ready and serving; a target that is no pod is no pod.
            {"addresses": ["10.0.0.6"], "targetRef": {"kind": "Node", "name": "n", "uid": "x"}},
            {"addresses": ["10.0.0.7"], "conditions": {"ready": False, "terminating": True}},
        ],
    }

    found = observe_item(item, resource=resource("endpointslices"))

    assert found is not None
    assert (found.key, found.partition_key, found.source_version) == (
        "EndpointSlice/shop/web-abc12",
        "shop",
        "44",
    )
    assert found.event == EndpointSliceObserved(
        uid="u-slice",
        namespace="shop",
        name="web-abc12",
        service="web",
        address_type="IPv4",
        labels={"kubernetes.io/service-name": "web"},
        ports=(EndpointPortSpec(port=8080, protocol="TCP", name=None),),
        endpoints=(
            EndpointSpec(addresses=("10.0.0.5",), node="node-1", pod_uid="u1", pod_name="web-1"),
            EndpointSpec(addresses=("10.0.0.6",)),
            EndpointSpec(addresses=("10.0.0.7",), ready=False, terminating=True),
        ),
    )


def test_a_network_policy_item() -> None:
    item = {
        "metadata": {"name": "db", "namespace": "shop", "uid": "u-np", "resourceVersion": "9"},
        "spec": {
            "podSelector": {"matchLabels": {"name": "db"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    "from": [
                        {"namespaceSelector": {}, "podSelector": {"matchLabels": {"a": "b"}}},
                        {"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.1.0/24"]}},
                    ],
                    "ports": [{"protocol": "TCP", "port": "db"}, {"port": 5000, "endPort": 5010}],
                }
            ],
            "egress": [{}],
        },
    }

    found = observe_item(item, resource=resource("networkpolicies"))

    assert found is not None
    assert (found.key, found.partition_key) == ("NetworkPolicy/shop/db", "shop")
    assert found.event == NetworkPolicyObserved(
        uid="u-np",
        namespace="shop",
        name="db",
        pod_selector=LabelSelectorSpec(match_labels={"name": "db"}),
        policy_types=("Ingress", "Egress"),
        ingress=(
            NetworkPolicyRuleSpec(
                peers=(
                    NetworkPolicyPeerSpec(
                        pod_selector=LabelSelectorSpec(match_labels={"a": "b"}),
                        namespace_selector=LabelSelectorSpec(),
                    ),
                    NetworkPolicyPeerSpec(
                        ip_block=IpBlockSpec(cidr="192.168.0.0/16", excepts=("192.168.1.0/24",))
                    ),
                ),
                ports=(
                    NetworkPolicyPortSpec(protocol="TCP", port="db"),
                    NetworkPolicyPortSpec(protocol="TCP", port=5000, end_port=5010),
                ),
            ),
        ),
        # An empty rule: every peer, every port.
        egress=(NetworkPolicyRuleSpec(),),
    )


def test_a_network_policy_knm_cannot_read_is_skipped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    item = {
        "metadata": {"name": "db", "namespace": "shop", "uid": "u-np"},
        "spec": {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}},
    }

    with caplog.at_level(logging.WARNING, logger="knm.watcher"):
        assert observe_item(item, resource=resource("networkpolicies")) is None

    assert "NetworkPolicy shop/db: spec.podSelector.matchExpressions[0].operator 'Near'" in (
        caplog.text
    )
