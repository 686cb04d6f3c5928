"""Facts off the bus, as the domain's observations."""

from __future__ import annotations

from knm.core.domain.engine import (
    NamespaceGone,
    NamespaceSeen,
    NodeGone,
    NodeSeen,
    Observation,
    PodGone,
    PodSeen,
    ServiceGone,
    ServiceSeen,
)
from knm.core.domain.model import (
    ContainerPort,
    Namespace,
    Node,
    OwnerRef,
    Pod,
    Service,
    ServicePort,
)
from knm.core.events.base import Envelope
from knm.core.events.facts import (
    NamespaceDeleted,
    NamespaceObserved,
    NodeDeleted,
    NodeObserved,
    PodDeleted,
    PodObserved,
    ServiceDeleted,
    ServiceObserved,
)


def source_version(message: Envelope) -> int | None:
    value = message.source_version
    return int(value) if value is not None and value.isdigit() else None


def observation_of(message: Envelope) -> Observation | None:
    """The domain's view of a fact; None for facts the allocator has no rule for.

    Those are applied as nothing: their ids still go to the inbox and their positions
    forward with the batch. Controllers' facts are among them (pods carry their owner
    chain), and so, for now, are EndpointSlices and NetworkPolicies: knm's backends come
    from its own selection of ready pods and its policy from labels (DESIGN.md), and no
    rule reads either yet.
    """
    version = source_version(message)
    match message.payload:
        case PodObserved() as fact:
            return PodSeen(
                pod=Pod(
                    uid=fact.uid,
                    namespace=fact.namespace,
                    name=fact.name,
                    node=fact.node,
                    labels=dict(fact.labels),
                    annotations=dict(fact.annotations),
                    host_network=fact.host_network,
                    phase=fact.phase,
                    ready=fact.ready,
                    owners=tuple(OwnerRef(o.kind, o.name, o.uid) for o in fact.owners),
                    ports=tuple(ContainerPort(p.port, p.protocol, p.name) for p in fact.ports),
                ),
                version=version,
            )
        case PodDeleted() as fact:
            return PodGone(uid=fact.uid, namespace=fact.namespace, name=fact.name)
        case ServiceObserved() as fact:
            return ServiceSeen(
                service=Service(
                    uid=fact.uid,
                    namespace=fact.namespace,
                    name=fact.name,
                    selector=dict(fact.selector) if fact.selector is not None else None,
                    ports=tuple(
                        ServicePort(p.port, p.protocol, p.target_port, p.name) for p in fact.ports
                    ),
                    cluster_ip=fact.cluster_ip,
                    headless=fact.headless,
                    type=fact.type,
                ),
                version=version,
            )
        case ServiceDeleted() as fact:
            return ServiceGone(uid=fact.uid, namespace=fact.namespace, name=fact.name)
        case NamespaceObserved() as fact:
            return NamespaceSeen(Namespace(name=fact.name, uid=fact.uid, labels=dict(fact.labels)))
        case NamespaceDeleted() as fact:
            return NamespaceGone(name=fact.name)
        case NodeObserved() as fact:
            return NodeSeen(
                Node(name=fact.name, uid=fact.uid, address=fact.address, labels=dict(fact.labels))
            )
        case NodeDeleted() as fact:
            return NodeGone(name=fact.name)
    return None
