"""The manifest source's snapshot, and the differ between two snapshots."""

from __future__ import annotations

import logging
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from knm.core.events.facts import (
    ControllerDeleted,
    ControllerObserved,
    NamespaceDeleted,
    NamespaceObserved,
    NodeDeleted,
    NodeObserved,
    PodDeleted,
    PodObserved,
    ServiceDeleted,
    ServiceObserved,
)
from services.watcher.errors import BadManifestError
from services.watcher.source import (
    Deletion,
    ManifestSource,
    ObservedObject,
    deletion_of,
    diff,
    observed,
)
from tests.services.watcher.builders import apps, namespace, pod, service, write_yaml


def test_snapshot_orders_and_keys_the_facts(tmp_path: Path) -> None:
    write_yaml(
        tmp_path / "app.yaml",
        pod("lone", namespace="shop"),
        service("web", selector={"app": "web"}),
        apps("Deployment", "web", replicas=1),
        namespace("ops"),
    )
    source = ManifestSource([tmp_path], nodes=1, underlay=IPv4Network("10.1.0.0/24"))

    snapshot = source.snapshot()

    rs, web = snapshot[5].event, snapshot[8].event
    assert isinstance(rs, ControllerObserved)
    assert isinstance(web, PodObserved)
    assert [(o.key, o.partition_key, type(o.event)) for o in snapshot] == [
        ("Namespace/shop", "shop", NamespaceObserved),
        ("Namespace/default", "default", NamespaceObserved),
        ("Namespace/ops", "ops", NamespaceObserved),
        ("Node/node-1", "node/node-1", NodeObserved),
        ("Deployment/default/web", "default", ControllerObserved),
        (f"ReplicaSet/default/{rs.name}", "default", ControllerObserved),
        ("Service/default/web", "default", ServiceObserved),
        ("Pod/shop/lone", "shop", PodObserved),
        (f"Pod/default/{web.name}", "default", PodObserved),
    ]
    assert all(o.source_version is None for o in snapshot)
    node = snapshot[3].event
    assert isinstance(node, NodeObserved)
    assert node.address == "10.1.0.1"
    assert web.node == "node-1"
    assert (web.phase, web.ready) == ("Running", True)
    assert [owner.kind for owner in web.owners] == ["ReplicaSet", "Deployment"]
    assert source.nodes() == ["node-1"]


def test_nodes_include_those_pods_are_pinned_to(tmp_path: Path) -> None:
    write_yaml(tmp_path / "a.yaml", pod("edge", node_name="edge-1"))
    source = ManifestSource([tmp_path], nodes=2)

    assert source.nodes() == ["node-1", "node-2"]
    source.snapshot()
    assert source.nodes() == ["node-1", "node-2", "edge-1"]


def test_a_bad_configuration_is_refused_at_once(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ManifestSource([tmp_path], nodes=0)
    with pytest.raises(ValueError, match="no room for 3 nodes"):
        ManifestSource([tmp_path], nodes=3, underlay=IPv4Network("10.0.0.0/30"))
    with pytest.raises(ValueError, match="no room for 2 nodes"):
        ManifestSource([tmp_path], nodes=2, underlay=IPv4Network("10.0.0.7/32"))
    # A /31 has two host addresses (RFC 3021).
    assert ManifestSource([tmp_path], nodes=2, underlay=IPv4Network("10.0.0.0/31")).snapshot()


def test_skipped_kinds_warn_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}}
    path = write_yaml(tmp_path / "app.yaml", config, pod("web"))
    source = ManifestSource([tmp_path])

    with caplog.at_level(logging.WARNING, logger="knm.watcher"):
        first = source.snapshot()
        second = source.snapshot()

    assert first == second
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        (
            "knm.watcher",
            logging.WARNING,
            f"{path}: document 1: skipped v1 ConfigMap cfg: knm does not read this kind",
        )
    ]


def test_bad_manifests_raise_with_the_file(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "bad.yaml", service("web", clusterIP="300.1.1.1"))

    with pytest.raises(BadManifestError) as caught:
        ManifestSource([tmp_path]).snapshot()

    assert caught.value.message == (
        f'{path}: document 1: Service default/web: spec.clusterIP must be an IPv4 address, "" '
        "or \"None\", not '300.1.1.1'"
    )


# ---- diff --------------------------------------------------------------------------------


def a_pod(name: str, *, uid: str | None = None, **labels: str) -> ObservedObject:
    return observed(PodObserved(uid=uid or f"u-{name}", namespace="shop", name=name, labels=labels))


def everything() -> list[ObservedObject]:
    return [
        observed(NamespaceObserved(name="shop", uid="u-ns")),
        observed(NodeObserved(name="node-1", uid="u-node")),
        observed(
            ControllerObserved(
                kind="ReplicationController", uid="u-rc", namespace="shop", name="web"
            )
        ),
        observed(ServiceObserved(uid="u-svc", namespace="shop", name="web")),
        a_pod("web-1"),
    ]


def keyed(objects: list[ObservedObject]) -> dict[str, ObservedObject]:
    return {obj.key: obj for obj in objects}


def test_everything_is_new_at_first() -> None:
    assert diff({}, everything()) == everything()


def test_nothing_changed_nothing_to_say() -> None:
    assert diff(keyed(everything()), everything()) == []


def test_changed_objects_are_observed_again() -> None:
    before = [a_pod("a", tier="x"), a_pod("b")]
    after = [a_pod("a", tier="y"), a_pod("b")]

    assert diff(keyed(before), after) == [a_pod("a", tier="y")]


def test_deletions_come_first_dependents_first() -> None:
    current = [a_pod("new")]

    changes = diff(keyed(everything()), current)

    assert [type(change.event) for change in changes] == [
        PodDeleted,
        ServiceDeleted,
        ControllerDeleted,
        NodeDeleted,
        NamespaceDeleted,
        PodObserved,
    ]
    assert all(isinstance(change, Deletion) for change in changes[:5])
    assert changes[0] == Deletion(
        "Pod/shop/web-1", "shop", PodDeleted(uid="u-web-1", namespace="shop", name="web-1")
    )
    assert changes[2].event == ControllerDeleted(
        kind="ReplicationController", uid="u-rc", namespace="shop", name="web"
    )
    assert changes[3] == Deletion(
        "Node/node-1", "node/node-1", NodeDeleted(name="node-1", uid="u-node")
    )
    assert changes[4].event == NamespaceDeleted(name="shop", uid="u-ns")


def test_a_new_uid_under_the_same_key_is_a_deletion_then_a_new_object() -> None:
    before = a_pod("a", uid="old")
    after = a_pod("a", uid="new")

    assert diff(keyed([before]), [after]) == [deletion_of(before), after]


def test_a_new_source_version_alone_is_no_change() -> None:
    before = a_pod("a")
    after = observed(before.event, source_version="42")

    assert diff(keyed([before]), [after]) == []


def test_keys_and_partitions() -> None:
    assert [(o.key, o.partition_key) for o in everything()] == [
        ("Namespace/shop", "shop"),
        ("Node/node-1", "node/node-1"),
        ("ReplicationController/shop/web", "shop"),
        ("Service/shop/web", "shop"),
        ("Pod/shop/web-1", "shop"),
    ]
