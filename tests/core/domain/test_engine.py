"""Scenarios of the network rules that random clusters rarely reach."""

from __future__ import annotations

from datetime import timedelta
from ipaddress import IPv4Address, IPv4Network

from knm.core.domain.engine import (
    NamespaceSeen,
    NetworkModel,
    NodeGone,
    NodeSeen,
    PodGone,
    PodSeen,
    ServiceGone,
    ServiceSeen,
)
from knm.core.domain.model import (
    Namespace,
    NetworkSettings,
    Node,
    Pod,
    Service,
    ServicePort,
)
from knm.core.domain.state import ClusterState
from tests.core.domain.strategies import cause


class Cluster:
    def __init__(self, settings: NetworkSettings | None = None) -> None:
        self.settings = settings or NetworkSettings()
        self.state = ClusterState(collection_label=self.settings.collection_label)
        self.model = NetworkModel(self.state, self.settings)
        self.step = 0

    def apply(self, *observations: object, seconds: float = 1.0) -> None:
        for observation in observations:
            self.model.apply(observation, cause(self.step, seconds=seconds))  # type: ignore[arg-type]
            self.step += 1


def pod(uid: str, node: str | None = "node-1", **labels: str) -> PodSeen:
    return PodSeen(Pod(uid, "default", uid, node=node, labels=labels, phase="Running"))


def test_a_node_takes_another_block_when_its_blocks_are_full() -> None:
    cluster = Cluster(NetworkSettings(block_prefix=30))
    cluster.apply(*(pod(f"p{i}") for i in range(5)))
    blocks = sorted(cluster.state.node_blocks["node-1"])
    # /30 blocks hold 4 addresses; the pool's network address is never used.
    assert blocks == [IPv4Network("10.0.0.0/30"), IPv4Network("10.0.0.4/30")]
    assert {r.block for r in cluster.state.pods.values()} == {"10.0.0.0/30", "10.0.0.4/30"}


def test_an_exhausted_pool_is_reported_once_and_retried_when_an_address_frees() -> None:
    settings = NetworkSettings(
        pod_pools=(IPv4Network("10.0.0.0/29"),), block_prefix=29, quarantine=timedelta(0)
    )
    cluster = Cluster(settings)
    cluster.apply(*(pod(f"p{i}") for i in range(7)))
    changes = cluster.state.take_changes()
    assert [p.code for p in changes.problems] == ["pool-exhausted"]
    assert "default/p6" in changes.problems[0].subject
    assert cluster.state.pods.get("p6").ip is None  # type: ignore[union-attr]
    cluster.apply(PodSeen(Pod("p6", "default", "p6", node="node-1", phase="Running")))
    assert not cluster.state.take_changes().problems
    cluster.apply(PodGone("p0", "default", "p0"))
    assert cluster.state.pods.get("p6").ip == IPv4Address("10.0.0.1")  # type: ignore[union-attr]


def test_cluster_chosen_vip_conflict_is_a_problem_not_a_duplicate() -> None:
    cluster = Cluster()
    ports = (ServicePort(80),)
    cluster.apply(
        ServiceSeen(Service("s1", "default", "a", {"name": "a"}, ports, cluster_ip="10.254.0.9")),
        ServiceSeen(Service("s2", "default", "b", {"name": "b"}, ports, cluster_ip="10.254.0.9")),
    )
    changes = cluster.state.take_changes()
    assert [p.code for p in changes.problems] == ["vip-conflict"]
    assert cluster.state.services.get("s2").vip is None  # type: ignore[union-attr]
    cluster.apply(ServiceGone("s1", "default", "a"))
    assert cluster.state.services.get("s2").vip == IPv4Address("10.254.0.9")  # type: ignore[union-attr]


def test_released_vips_are_quarantined_and_then_reused() -> None:
    cluster = Cluster(NetworkSettings(quarantine=timedelta(seconds=10)))
    svc = Service("s1", "default", "a", {"name": "a"}, (ServicePort(80),))
    cluster.apply(ServiceSeen(svc), ServiceGone("s1", "default", "a"))
    cluster.apply(ServiceSeen(Service("s2", "default", "b", {"name": "b"}, (ServicePort(80),))))
    assert cluster.state.services.get("s2").vip == IPv4Address("10.254.0.2")  # type: ignore[union-attr]
    cluster.apply(NodeSeen(Node("n", "u")), seconds=20)
    cluster.apply(ServiceSeen(Service("s3", "default", "c", {"name": "c"}, (ServicePort(80),))))
    assert cluster.state.services.get("s3").vip == IPv4Address("10.254.0.1")  # type: ignore[union-attr]


def test_host_network_and_unscheduled_pods_get_no_address() -> None:
    cluster = Cluster()
    cluster.apply(
        PodSeen(Pod("h", "default", "h", node="node-1", host_network=True, labels={"name": "x"})),
        pod("u", node=None, name="x"),
    )
    host, unscheduled = cluster.state.pods.get("h"), cluster.state.pods.get("u")
    assert host is not None
    assert host.ip is None
    assert host.network is None
    assert unscheduled is not None
    assert unscheduled.ip is None
    assert unscheduled.network == "default/x"
    cluster.apply(pod("u", node="node-2", name="x"))
    scheduled = cluster.state.pods.get("u")
    assert scheduled is not None
    assert scheduled.ip is not None


def test_a_gone_node_gives_back_its_blocks_once_empty() -> None:
    cluster = Cluster()
    cluster.apply(NodeSeen(Node("node-1", "n1")), pod("a"), NodeGone("node-1"))
    assert len(cluster.state.blocks) == 1
    cluster.apply(PodGone("a", "default", "a"))
    assert len(cluster.state.blocks) == 0


def test_a_recreated_namespace_forgets_the_old_ones_objects() -> None:
    cluster = Cluster()
    cluster.apply(NamespaceSeen(Namespace("default", "old")), pod("a", name="web"))
    cluster.apply(NamespaceSeen(Namespace("default", "new")))
    assert len(cluster.state.pods) == 0
    assert "a" in cluster.state.tombstones


def test_a_deleted_pod_does_not_come_back_from_a_late_duplicate() -> None:
    cluster = Cluster()
    cluster.apply(pod("a", name="web"), PodGone("a", "default", "a"), pod("a", name="web"))
    assert len(cluster.state.pods) == 0


def test_stale_versions_are_ignored() -> None:
    cluster = Cluster()
    newer = Pod("a", "default", "a", node="node-1", labels={"name": "new"}, phase="Running")
    older = Pod("a", "default", "a", node="node-1", labels={"name": "old"}, phase="Running")
    cluster.apply(PodSeen(newer, version=7), PodSeen(older, version=5))
    assert cluster.state.pods.get("a").collection == "new"  # type: ignore[union-attr]


def test_uses_across_namespaces_through_the_annotation() -> None:
    cluster = Cluster()
    cluster.apply(
        ServiceSeen(Service("s", "data", "db", {"name": "db"}, (ServicePort(5432),))),
        PodSeen(
            Pod(
                "a",
                "default",
                "a",
                node="node-1",
                labels={"name": "web"},
                annotations={"knm.io/uses": "data/db"},
                phase="Running",
            )
        ),
    )
    assert [p.name for p in cluster.state.policies.values()] == ["default/web->data/service-db"]


def test_a_terminated_pod_releases_its_address_and_floating_ip() -> None:
    cluster = Cluster()
    cluster.apply(
        ServiceSeen(Service("s", "default", "web", {"name": "web"}, (ServicePort(80),))),
        pod("a", name="web"),
    )
    assert len(cluster.state.floating) == 1
    cluster.apply(
        PodSeen(Pod("a", "default", "a", node="node-1", labels={"name": "web"}, phase="Succeeded"))
    )
    assert len(cluster.state.floating) == 0
    assert cluster.state.pods.get("a").ip is None  # type: ignore[union-attr]
    assert len(cluster.state.networks) == 1  # only the service network remains


def load_balancer(uid: str, *, type: str = "LoadBalancer") -> ServiceSeen:
    return ServiceSeen(Service(uid, "default", uid, {"name": uid}, (ServicePort(80),), type=type))


def public(cluster: Cluster) -> dict[str, str | None]:
    return {
        uid: str(r.public_ip) if r.public_ip else None for uid, r in cluster.state.services.items()
    }


def test_a_load_balancer_keeps_its_public_address_until_its_type_changes() -> None:
    cluster = Cluster()
    cluster.apply(load_balancer("a"), load_balancer("b"), load_balancer("a"))
    assert public(cluster) == {"a": "10.1.0.1", "b": "10.1.0.2"}
    # NodePort is not a load balancer: released, quarantined; its VIP stays.
    cluster.apply(load_balancer("a", type="NodePort"))
    assert public(cluster)["a"] is None
    assert cluster.state.services.get("a").vip is not None  # type: ignore[union-attr]
    held = cluster.state.quarantine.get(IPv4Address("10.1.0.1"))
    assert held is not None
    assert held.pool == "10.1.0.0/16"
    # Back to a LoadBalancer inside the quarantine: the next free address.
    cluster.apply(load_balancer("a"))
    assert public(cluster) == {"a": "10.1.0.3", "b": "10.1.0.2"}


def test_a_load_balancer_waiting_for_a_public_address_gets_the_first_one_freed() -> None:
    settings = NetworkSettings(public_pools=(IPv4Network("10.1.0.0/30"),), quarantine=timedelta(0))
    cluster = Cluster(settings)
    cluster.apply(load_balancer("a"), load_balancer("b"), load_balancer("c"))
    assert public(cluster) == {"a": "10.1.0.1", "b": "10.1.0.2", "c": None}
    assert [(p.code, p.subject) for p in cluster.state.problems] == [
        ("pool-exhausted", "service default/c")
    ]
    # Seen again while it waits: no second report.
    cluster.apply(load_balancer("c"))
    assert len(cluster.state.problems) == 1
    cluster.apply(ServiceGone("a", "default", "a"))
    assert public(cluster) == {"b": "10.1.0.2", "c": "10.1.0.1"}
    assert not cluster.state.pending


def test_a_public_address_in_quarantine_goes_to_a_waiting_load_balancer_when_it_expires() -> None:
    settings = NetworkSettings(
        public_pools=(IPv4Network("10.1.0.0/30"),), quarantine=timedelta(seconds=5)
    )
    cluster = Cluster(settings)
    cluster.apply(load_balancer("a"), load_balancer("b"), load_balancer("c"))
    cluster.apply(load_balancer("a", type="ClusterIP"))
    assert public(cluster)["c"] is None
    # Any later observation past the quarantine hands the address over.
    cluster.apply(pod("p1"), pod("p2"), pod("p3"), pod("p4"), pod("p5"))
    assert public(cluster) == {"a": None, "b": "10.1.0.2", "c": "10.1.0.1"}
