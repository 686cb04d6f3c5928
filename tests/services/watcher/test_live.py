"""The live source's conversion of served objects (its API calls are proven against a real
kube-apiserver in a later issue; nothing here pretends to be one)."""

from __future__ import annotations

import logging

import pytest

from knm.core.events.facts import NamespaceObserved, OwnerReference, PodObserved
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
