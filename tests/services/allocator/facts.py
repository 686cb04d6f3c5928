"""Domain observations as the facts a watcher would publish (for driving the allocator)."""

from __future__ import annotations

import uuid
from datetime import datetime

from knm.core.bus.protocol import OutgoingMessage
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
from knm.core.events.base import Envelope, Event, envelope
from knm.core.events.codec import encode
from knm.core.events.facts import (
    ContainerPortSpec,
    NamespaceDeleted,
    NamespaceObserved,
    NodeDeleted,
    NodeObserved,
    OwnerReference,
    PodDeleted,
    PodObserved,
    ServiceDeleted,
    ServiceObserved,
    ServicePortSpec,
)
from knm.core.topics import Topics


def fact_of(observation: Observation) -> tuple[str, str, Event]:
    """(partition key, object key, event)."""
    match observation:
        case PodSeen(pod=pod):
            return (
                pod.namespace,
                f"Pod/{pod.namespace}/{pod.name}",
                PodObserved(
                    uid=pod.uid,
                    namespace=pod.namespace,
                    name=pod.name,
                    node=pod.node,
                    labels=dict(pod.labels),
                    annotations=dict(pod.annotations),
                    host_network=pod.host_network,
                    phase=pod.phase,
                    ready=pod.ready,
                    owners=tuple(
                        OwnerReference(kind=o.kind, name=o.name, uid=o.uid) for o in pod.owners
                    ),
                    ports=tuple(
                        ContainerPortSpec(port=p.port, protocol=p.protocol, name=p.name)
                        for p in pod.ports
                    ),
                ),
            )
        case PodGone(uid=uid, namespace=namespace, name=name):
            return (
                namespace,
                f"Pod/{namespace}/{name}",
                PodDeleted(uid=uid, namespace=namespace, name=name),
            )
        case ServiceSeen(service=service):
            return (
                service.namespace,
                f"Service/{service.namespace}/{service.name}",
                ServiceObserved(
                    uid=service.uid,
                    namespace=service.namespace,
                    name=service.name,
                    selector=dict(service.selector) if service.selector is not None else None,
                    ports=tuple(
                        ServicePortSpec(
                            port=p.port, protocol=p.protocol, target_port=p.target_port, name=p.name
                        )
                        for p in service.ports
                    ),
                    cluster_ip=service.cluster_ip,
                    headless=service.headless,
                    type=service.type,
                ),
            )
        case ServiceGone(uid=uid, namespace=namespace, name=name):
            return (
                namespace,
                f"Service/{namespace}/{name}",
                ServiceDeleted(uid=uid, namespace=namespace, name=name),
            )
        case NamespaceSeen(namespace=ns):
            return (
                ns.name,
                f"Namespace/{ns.name}",
                NamespaceObserved(name=ns.name, uid=ns.uid, labels=dict(ns.labels)),
            )
        case NamespaceGone(name=name):
            return name, f"Namespace/{name}", NamespaceDeleted(name=name, uid="")
        case NodeSeen(node=node):
            return (
                f"node/{node.name}",
                f"Node/{node.name}",
                NodeObserved(
                    name=node.name, uid=node.uid, address=node.address, labels=dict(node.labels)
                ),
            )
        case NodeGone(name=name):
            return f"node/{name}", f"Node/{name}", NodeDeleted(name=name, uid="")
    raise AssertionError(observation)


def envelopes(observations: list[Observation], *, start: datetime) -> list[tuple[str, Envelope]]:
    from datetime import timedelta

    out = []
    for step, observation in enumerate(observations):
        partition_key, key, event = fact_of(observation)
        out.append(
            (
                partition_key,
                envelope(
                    event,
                    key=key,
                    occurred_at=start + timedelta(seconds=step),
                    id=uuid.uuid5(uuid.NAMESPACE_URL, f"test/{step}"),
                ),
            )
        )
    return out


def messages(pairs: list[tuple[str, Envelope]], topics: Topics) -> list[OutgoingMessage]:
    return [OutgoingMessage(topics.facts, key, encode(message)) for key, message in pairs]
