"""Controllers into pods and pods onto simulated nodes: names, owners, uids, placement."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections import Counter
from ipaddress import IPv4Network
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.watcher.errors import BadManifestError
from services.watcher.expand import NAMESPACE, Cluster, expand
from services.watcher.manifests import Declared
from services.watcher.objects import (
    Controller,
    EndpointSlice,
    NetworkPolicy,
    Node,
    Pod,
    parse_object,
)
from tests.services.watcher.builders import Manifest, apps, namespace, pod, rc, service

UNDERLAY = IPv4Network("192.168.0.0/16")
SUFFIX = "[bcdfghjklmnpqrstvwxz2456789]"


def declared(*documents: Manifest) -> list[Declared]:
    found: list[Declared] = []
    for index, document in enumerate(documents, start=1):
        parsed = parse_object(document)
        assert parsed is not None
        assert not isinstance(parsed.object, Node | EndpointSlice | NetworkPolicy)
        found.append(Declared(f"test.yaml: document {index}", parsed.object))
    return found


def expanded(*documents: Manifest, nodes: int = 2, underlay: IPv4Network = UNDERLAY) -> Cluster:
    return expand(declared(*documents), nodes=nodes, underlay=underlay)


def uid5(path: str) -> str:
    return str(uuid.uuid5(NAMESPACE, path))


def owners(obj: Pod | Controller) -> list[tuple[str, str, str]]:
    return [(owner.kind, owner.name, owner.uid) for owner in obj.meta.owners]


def load(cluster: Cluster) -> Counter[str]:
    return Counter(p.spec.node_name for p in cluster.pods if p.spec.node_name is not None)


# ---- controllers -------------------------------------------------------------------------


def test_replication_controller_pods() -> None:
    cluster = expanded(rc("frontend", replicas=3, labels={"name": "frontend", "uses": "redis"}))

    rc_uid = uid5("ReplicationController/default/frontend")
    assert [c.meta.uid for c in cluster.controllers] == [rc_uid]
    assert len(cluster.pods) == 3
    assert len({p.meta.name for p in cluster.pods}) == 3
    for web in cluster.pods:
        assert re.fullmatch(f"frontend-{SUFFIX}{{5}}", web.meta.name)
        assert web.meta.namespace == "default"
        assert web.meta.uid == uid5(f"Pod/default/{web.meta.name}")
        assert web.meta.labels == {"name": "frontend", "uses": "redis"}
        assert owners(web) == [("ReplicationController", "frontend", rc_uid)]
        assert (web.phase, web.ready) == ("Running", True)


def test_a_given_uid_is_kept_and_names_the_owner() -> None:
    document = rc("web")
    document["metadata"]["uid"] = "11111111-2222-3333-4444-555555555555"

    cluster = expanded(document)

    assert cluster.controllers[0].meta.uid == "11111111-2222-3333-4444-555555555555"
    assert owners(cluster.pods[0])[0][2] == "11111111-2222-3333-4444-555555555555"


def test_scaling_up_keeps_the_existing_pods_names() -> None:
    two = [p.meta.name for p in expanded(rc("web", replicas=2)).pods]
    five = [p.meta.name for p in expanded(rc("web", replicas=5)).pods]

    assert five[:2] == two


def test_zero_replicas_make_no_pods() -> None:
    assert expanded(rc("web", replicas=0)).pods == ()


def test_deployment_runs_a_replica_set_named_by_its_template_hash() -> None:
    cluster = expanded(apps("Deployment", "web", replicas=2, namespace="shop"))

    _, replica_set = cluster.controllers
    template_hash = replica_set.meta.labels["pod-template-hash"]
    assert re.fullmatch(f"{SUFFIX}{{10}}", template_hash)
    assert replica_set.meta.kind == "ReplicaSet"
    assert replica_set.meta.name == f"web-{template_hash}"
    assert replica_set.meta.uid == uid5(f"ReplicaSet/shop/web-{template_hash}")
    assert replica_set.replicas == 2
    assert replica_set.selector == {"app": "web", "pod-template-hash": template_hash}
    deployment_ref = ("Deployment", "web", uid5("Deployment/shop/web"))
    assert owners(replica_set) == [deployment_ref]
    assert len(cluster.pods) == 2
    for web in cluster.pods:
        assert re.fullmatch(f"web-{template_hash}-{SUFFIX}{{5}}", web.meta.name)
        assert web.meta.labels == {"app": "web", "pod-template-hash": template_hash}
        assert owners(web) == [
            ("ReplicaSet", replica_set.meta.name, replica_set.meta.uid),
            deployment_ref,
        ]


def test_the_template_hash_follows_the_template_only() -> None:
    def replica_set_name(document: Manifest) -> str:
        return expanded(document).controllers[1].meta.name

    base = replica_set_name(apps("Deployment", "web", replicas=1))
    assert replica_set_name(apps("Deployment", "web", replicas=4)) == base
    assert replica_set_name(apps("Deployment", "web", labels={"app": "web", "v": "2"})) != base


def test_a_declared_replica_set_extends_its_owner_chain() -> None:
    document = apps("ReplicaSet", "web-abc", replicas=1)
    document["metadata"]["uid"] = "u-rs"
    document["metadata"]["ownerReferences"] = [
        {"kind": "Deployment", "name": "web", "uid": "u-deploy", "controller": True}
    ]

    (web,) = expanded(document).pods

    assert owners(web) == [("ReplicaSet", "web-abc", "u-rs"), ("Deployment", "web", "u-deploy")]


def test_stateful_set_pods_are_numbered() -> None:
    cluster = expanded(apps("StatefulSet", "db", replicas=3))

    assert [p.meta.name for p in cluster.pods] == ["db-0", "db-1", "db-2"]
    ss_ref = ("StatefulSet", "db", uid5("StatefulSet/default/db"))
    for index, db in enumerate(cluster.pods):
        assert db.meta.labels == {
            "app": "db",
            "statefulset.kubernetes.io/pod-name": f"db-{index}",
            "apps.kubernetes.io/pod-index": str(index),
        }
        assert owners(db) == [ss_ref]


def test_daemon_set_runs_one_pod_per_node() -> None:
    cluster = expanded(apps("DaemonSet", "agent"), nodes=3)

    assert [p.spec.node_name for p in cluster.pods] == ["node-1", "node-2", "node-3"]
    assert len({p.meta.name for p in cluster.pods}) == 3
    for agent in cluster.pods:
        assert re.fullmatch(f"agent-{SUFFIX}{{5}}", agent.meta.name)
        assert owners(agent) == [("DaemonSet", "agent", uid5("DaemonSet/default/agent"))]
    assert cluster.controllers[0].replicas is None


def test_daemon_set_pods_keep_their_names_when_nodes_are_added() -> None:
    two = {p.spec.node_name: p.meta.name for p in expanded(apps("DaemonSet", "a"), nodes=2).pods}
    three = {p.spec.node_name: p.meta.name for p in expanded(apps("DaemonSet", "a"), nodes=3).pods}

    assert {node: three[node] for node in two} == two


def test_long_controller_names_are_cut_as_kubernetes_cuts_generated_names() -> None:
    name = "a" * 70

    (web,) = expanded(rc(name, labels={"name": "web"})).pods

    assert len(web.meta.name) == 63
    # The prefix `<name>-` is cut to 58 characters, dash and all.
    assert re.fullmatch("a" * 58 + f"{SUFFIX}{{5}}", web.meta.name)


def test_a_name_declared_twice_is_refused() -> None:
    with pytest.raises(BadManifestError) as caught:
        expanded(pod("web"), pod("other"), pod("web"))

    assert caught.value.message == (
        "test.yaml: document 3: Pod default/web: already made by test.yaml: document 1"
    )


def test_generated_names_step_around_declared_pods() -> None:
    first = expanded(rc("web", replicas=1)).pods[0].meta.name

    cluster = expanded(rc("web", replicas=1), pod(first))

    assert [p.meta.name for p in cluster.pods][1] == first
    assert cluster.pods[0].meta.name != first


def test_a_stateful_pod_name_that_is_taken_is_refused() -> None:
    with pytest.raises(BadManifestError) as caught:
        expanded(pod("db-1"), apps("StatefulSet", "db", replicas=2))

    assert caught.value.message == (
        "test.yaml: document 2: Pod default/db-1: already made by test.yaml: document 1"
    )


# ---- namespaces --------------------------------------------------------------------------


def test_every_namespace_used_is_observed_in_order_of_first_use() -> None:
    cluster = expanded(
        pod("a", namespace="shop"),
        service("b"),
        namespace("ops", labels={"team": "x"}),
        rc("c", namespace="shop"),
        apps("Deployment", "d", namespace="ops"),
    )

    assert [(n.meta.name, n.meta.uid) for n in cluster.namespaces] == [
        ("shop", uid5("Namespace/shop")),
        ("default", uid5("Namespace/default")),
        ("ops", uid5("Namespace/ops")),
    ]
    assert cluster.namespaces[0].meta.labels == {"kubernetes.io/metadata.name": "shop"}
    assert cluster.namespaces[2].meta.labels == {
        "team": "x",
        "kubernetes.io/metadata.name": "ops",
    }


def test_a_namespace_declared_after_its_use_takes_the_first_place() -> None:
    cluster = expanded(pod("a", namespace="shop"), namespace("shop", labels={"team": "x"}))

    (shop,) = cluster.namespaces
    assert shop.meta.labels["team"] == "x"


# ---- nodes and placement -----------------------------------------------------------------


def test_simulated_nodes_have_underlay_addresses() -> None:
    cluster = expanded(nodes=3)

    assert [(n.meta.name, n.address, n.meta.uid) for n in cluster.nodes] == [
        (f"node-{i}", f"192.168.0.{i}", uid5(f"Node/node-{i}")) for i in (1, 2, 3)
    ]
    assert cluster.nodes[0].meta.labels == {"kubernetes.io/hostname": "node-1"}

    other = expanded(nodes=2, underlay=IPv4Network("10.9.8.0/24"))
    assert [n.address for n in other.nodes] == ["10.9.8.1", "10.9.8.2"]


def test_pods_go_to_the_least_loaded_node_lowest_first() -> None:
    cluster = expanded(rc("a", replicas=3), pod("b"), pod("c"), nodes=2)

    assert [p.spec.node_name for p in cluster.pods] == [
        "node-1",
        "node-2",
        "node-1",
        "node-2",
        "node-1",
    ]


def test_node_name_is_honoured_and_counts_towards_the_load() -> None:
    cluster = expanded(pod("pinned", node_name="node-1"), rc("web", replicas=2), nodes=2)

    assert [p.spec.node_name for p in cluster.pods] == ["node-1", "node-2", "node-1"]


def test_a_node_name_beyond_the_simulated_nodes_makes_that_node_too() -> None:
    cluster = expanded(
        pod("edge", node_name="edge-1"),
        pod("five", node_name="node-5"),
        rc("web", replicas=2, node_name="edge-2"),
        pod("free"),
        nodes=2,
    )

    assert [(n.meta.name, n.address) for n in cluster.nodes] == [
        ("node-1", "192.168.0.1"),
        ("node-2", "192.168.0.2"),
        ("edge-1", "192.168.0.3"),
        ("node-5", "192.168.0.5"),
        ("edge-2", "192.168.0.4"),
    ]
    assert [p.spec.node_name for p in cluster.pods] == [
        "edge-1",
        "node-5",
        "edge-2",
        "edge-2",
        "node-1",
    ]


def test_daemon_sets_cover_the_extra_nodes_too() -> None:
    cluster = expanded(apps("DaemonSet", "agent"), pod("edge", node_name="edge"), nodes=1)

    assert [p.spec.node_name for p in cluster.pods] == ["node-1", "edge", "edge"]


def test_host_network_pods_are_placed() -> None:
    document = pod("host")
    document["spec"]["hostNetwork"] = True

    (host,) = expanded(pod("first"), document, nodes=2).pods[1:]

    assert host.spec.node_name == "node-2"
    assert host.spec.host_network is True


def test_declared_pods_run() -> None:
    (web,) = expanded(pod("web")).pods

    assert (web.phase, web.ready, web.meta.uid) == ("Running", True, uid5("Pod/default/web"))


def test_the_underlay_must_hold_the_nodes() -> None:
    with pytest.raises(ValueError, match="no room for 3 nodes"):
        expanded(nodes=3, underlay=IPv4Network("10.0.0.0/30"))
    with pytest.raises(ValueError, match="at least 1"):
        expanded(nodes=0)
    with pytest.raises(BadManifestError) as caught:
        expanded(pod("x", node_name="edge"), nodes=2, underlay=IPv4Network("10.0.0.0/30"))
    assert caught.value.message == "node edge: the underlay 10.0.0.0/30 has no address left for it"


workloads = st.lists(
    st.tuples(
        st.sampled_from(["ReplicationController", "Deployment", "StatefulSet", "DaemonSet", "Pod"]),
        st.integers(min_value=0, max_value=12),
    ),
    max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(workloads, st.integers(min_value=1, max_value=7))
def test_placement_is_even(workload: list[tuple[str, int]], nodes: int) -> None:
    documents: list[Manifest] = []
    for index, (kind, replicas) in enumerate(workload):
        name = f"w{index}"
        if kind == "Pod":
            documents.append(pod(name))
        elif kind == "ReplicationController":
            documents.append(rc(name, replicas=replicas))
        else:
            documents.append(apps(kind, name, replicas=replicas))

    cluster = expanded(*documents, nodes=nodes)

    counts = [load(cluster)[f"node-{i}"] for i in range(1, nodes + 1)]
    assert max(counts) - min(counts) <= 1
    assert sum(counts) == len(cluster.pods)


# ---- determinism -------------------------------------------------------------------------


def everything() -> list[Manifest]:
    return [
        namespace("shop"),
        rc("frontend", replicas=3, labels={"name": "frontend"}),
        apps("Deployment", "redis", replicas=2, namespace="shop"),
        apps("StatefulSet", "db", replicas=2, namespace="shop"),
        apps("DaemonSet", "agent"),
        apps("ReplicaSet", "cache", replicas=4),
        pod("edge", node_name="edge-1"),
        service("redis", namespace="shop", selector={"app": "redis"}),
    ]


def test_the_same_manifests_give_the_same_cluster() -> None:
    first = expanded(*everything(), nodes=3)
    second = expanded(*everything(), nodes=3)

    assert first == second
    assert repr(first) == repr(second)


def test_the_cluster_does_not_depend_on_the_process(tmp_path: Path) -> None:
    """Across interpreters with different hash seeds (set and dict iteration orders)."""
    script = (
        "from tests.services.watcher.test_expand import everything, expanded\n"
        "print(repr(expanded(*everything(), nodes=3)))\n"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script],
            check=True,
            capture_output=True,
            text=True,
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
            cwd=Path(__file__).parents[3],
        ).stdout
        for seed in ("1", "2")
    }

    assert outputs == {repr(expanded(*everything(), nodes=3)) + "\n"}
