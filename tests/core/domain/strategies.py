"""Hypothesis strategies: random clusters as sequences of observations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import strategies as st

from knm.core.domain.engine import (
    NamespaceGone,
    NodeGone,
    NodeSeen,
    Observation,
    PodGone,
    PodSeen,
    ServiceGone,
    ServiceSeen,
)
from knm.core.domain.model import Cause, ContainerPort, Node, OwnerRef, Pod, Service, ServicePort

NAMESPACES = ("default", "shop")
COLLECTIONS = ("web", "api", "db")
NODES = ("node-1", "node-2", "node-3")
T0 = datetime(2026, 1, 1, tzinfo=UTC)

POD_UIDS = tuple(f"pod-{i}" for i in range(14))
SERVICE_UIDS = tuple(f"svc-{i}" for i in range(6))


def namespace_of(uid: str) -> str:
    """A uid's namespace never changes, as in Kubernetes."""
    return NAMESPACES[int(uid.rsplit("-", 1)[1]) % len(NAMESPACES)]


@st.composite
def pods(draw: st.DrawFn) -> Pod:
    uid = draw(st.sampled_from(POD_UIDS))
    labels: dict[str, str] = {}
    if draw(st.booleans()):
        labels["name"] = draw(st.sampled_from(COLLECTIONS))
    if draw(st.booleans()):
        labels["uses"] = draw(st.sampled_from(COLLECTIONS))
    if draw(st.booleans()):
        labels["tier"] = draw(st.sampled_from(("front", "back")))
    annotations: dict[str, str] = {}
    if draw(st.integers(0, 4)) == 0:
        targets = draw(
            st.lists(
                st.sampled_from(
                    [*COLLECTIONS, *(f"{ns}/{c}" for ns in NAMESPACES for c in COLLECTIONS)]
                ),
                max_size=3,
            )
        )
        annotations["knm.io/uses"] = ",".join(targets)
    owners: tuple[OwnerRef, ...] = ()
    if draw(st.booleans()):
        top = draw(st.sampled_from(COLLECTIONS))
        owners = (OwnerRef("ReplicationController", top, f"rc-{top}"),)
    return Pod(
        uid=uid,
        namespace=namespace_of(uid),
        name=f"p{uid.rsplit('-', 1)[1]}",
        node=draw(st.sampled_from((*NODES, None))),
        labels=labels,
        annotations=annotations,
        host_network=draw(st.integers(0, 6)) == 0,
        phase=draw(st.sampled_from(("Running", "Running", "Running", "Pending", "Succeeded"))),
        ready=draw(st.integers(0, 5)) != 0,
        owners=owners,
        ports=(ContainerPort(8080, "TCP", "http"),),
    )


# LoadBalancer twice: its public address is what most service rules now turn on.
SERVICE_TYPES = ("ClusterIP", "LoadBalancer", "LoadBalancer", "NodePort")


@st.composite
def services(draw: st.DrawFn) -> Service:
    uid = draw(st.sampled_from(SERVICE_UIDS))
    index = int(uid.rsplit("-", 1)[1])
    selector = draw(
        st.one_of(
            st.none(),
            st.just({}),
            st.sampled_from(COLLECTIONS).map(lambda c: {"name": c}),
            st.sampled_from(("front", "back")).map(lambda t: {"tier": t}),
        )
    )
    headless = draw(st.integers(0, 5)) == 0
    # Cluster-chosen VIPs come from a corner knm's own allocation does not reach here.
    cluster_ip = f"10.254.200.{index + 1}" if draw(st.booleans()) else None
    ports = draw(
        st.lists(
            st.builds(
                ServicePort,
                port=st.sampled_from((80, 443, 6379)),
                protocol=st.sampled_from(("TCP", "UDP")),
                target_port=st.sampled_from((None, 8080, "http", "missing")),
            ),
            min_size=1,
            max_size=2,
        )
    )
    kind = "ClusterIP" if headless else draw(st.sampled_from(SERVICE_TYPES))
    return Service(
        uid=uid,
        namespace=namespace_of(uid),
        name=f"s{index}",
        selector=selector,
        ports=tuple(ports),
        cluster_ip=None if headless else cluster_ip,
        headless=headless,
        type=kind,
    )


def observations() -> st.SearchStrategy[Observation]:
    return st.one_of(
        pods().map(PodSeen),
        pods().map(PodSeen),
        pods().map(PodSeen),
        st.sampled_from(POD_UIDS).map(lambda u: PodGone(u, namespace_of(u), u)),
        services().map(ServiceSeen),
        st.sampled_from(SERVICE_UIDS).map(lambda u: ServiceGone(u, namespace_of(u), u)),
        st.sampled_from(NODES).map(lambda n: NodeSeen(Node(n, f"uid-{n}", "192.168.0.1"))),
        st.sampled_from(NODES).map(NodeGone),
        st.sampled_from(NAMESPACES).map(NamespaceGone).filter(lambda _: True),
    )


def histories(max_size: int = 40) -> st.SearchStrategy[list[Observation]]:
    return st.lists(observations(), max_size=max_size)


def cause(step: int, *, seconds: float = 1.0) -> Cause:
    return Cause(fact_id=f"fact-{step}", at=T0 + timedelta(seconds=step * seconds))
