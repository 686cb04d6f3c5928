"""The manifest source: the cluster that manifest files describe, as facts; and the differ
that turns two observations of a cluster into what changed between them."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path

from knm.core.events.facts import (
    ControllerDeleted,
    ControllerObserved,
    EndpointSliceDeleted,
    EndpointSliceObserved,
    NamespaceDeleted,
    NamespaceObserved,
    NetworkPolicyDeleted,
    NetworkPolicyObserved,
    NodeDeleted,
    NodeObserved,
    PodDeleted,
    PodObserved,
    ServiceDeleted,
    ServiceObserved,
)
from services.watcher.expand import check_simulation, expand, simulated_nodes
from services.watcher.manifests import declared_objects, load_documents
from services.watcher.objects import ObservedFact, fact_of

log = logging.getLogger("knm.watcher")

DEFAULT_NODES = 2
DEFAULT_UNDERLAY = IPv4Network("192.168.0.0/16")

DeletedFact = (
    NamespaceDeleted
    | NodeDeleted
    | ControllerDeleted
    | ServiceDeleted
    | PodDeleted
    | EndpointSliceDeleted
    | NetworkPolicyDeleted
)


@dataclass(frozen=True, slots=True)
class ObservedObject:
    """An object as a source sees it now, keyed as it travels on the bus."""

    # "Pod/default/web-x7k2p"; "Namespace/default" and "Node/node-1" have no namespace.
    key: str
    # The namespace (a Namespace's own name), or "node/<name>": keeps one object's facts
    # in order on one partition.
    partition_key: str
    event: ObservedFact
    # The object's version at its source (its resourceVersion); manifests have none.
    source_version: str | None = None


@dataclass(frozen=True, slots=True)
class Deletion:
    """An object a source no longer sees, keyed as it was observed."""

    key: str
    partition_key: str
    event: DeletedFact
    source_version: str | None = None


Change = ObservedObject | Deletion

# Dependents go before what they depend on: pods before the services and controllers
# that select or own them, namespaces last.
_DELETION_ORDER: dict[type[DeletedFact], int] = {
    EndpointSliceDeleted: 0,
    NetworkPolicyDeleted: 0,
    PodDeleted: 0,
    ServiceDeleted: 1,
    ControllerDeleted: 2,
    NodeDeleted: 3,
    NamespaceDeleted: 4,
}


def observed(event: ObservedFact, *, source_version: str | None = None) -> ObservedObject:
    """The fact with its key and partition key."""
    match event:
        case NamespaceObserved(name=name):
            key, partition = f"Namespace/{name}", name
        case NodeObserved(name=name):
            key, partition = f"Node/{name}", f"node/{name}"
        case ControllerObserved():
            key, partition = f"{event.kind}/{event.namespace}/{event.name}", event.namespace
        case ServiceObserved():
            key, partition = f"Service/{event.namespace}/{event.name}", event.namespace
        case PodObserved():
            key, partition = f"Pod/{event.namespace}/{event.name}", event.namespace
        case EndpointSliceObserved():
            key, partition = f"EndpointSlice/{event.namespace}/{event.name}", event.namespace
        case NetworkPolicyObserved():
            key, partition = f"NetworkPolicy/{event.namespace}/{event.name}", event.namespace
    return ObservedObject(key, partition, event, source_version)


def deletion_of(obj: ObservedObject, *, source_version: str | None = None) -> Deletion:
    """The fact that says the object is gone."""
    event: DeletedFact
    match obj.event:
        case NamespaceObserved(name=name, uid=uid):
            event = NamespaceDeleted(name=name, uid=uid)
        case NodeObserved(name=name, uid=uid):
            event = NodeDeleted(name=name, uid=uid)
        case ControllerObserved(kind=kind, uid=uid, namespace=namespace, name=name):
            event = ControllerDeleted(kind=kind, uid=uid, namespace=namespace, name=name)
        case ServiceObserved(uid=uid, namespace=namespace, name=name):
            event = ServiceDeleted(uid=uid, namespace=namespace, name=name)
        case PodObserved(uid=uid, namespace=namespace, name=name):
            event = PodDeleted(uid=uid, namespace=namespace, name=name)
        case EndpointSliceObserved(uid=uid, namespace=namespace, name=name):
            event = EndpointSliceDeleted(uid=uid, namespace=namespace, name=name)
        case NetworkPolicyObserved(uid=uid, namespace=namespace, name=name):
            event = NetworkPolicyDeleted(uid=uid, namespace=namespace, name=name)
    return Deletion(obj.key, obj.partition_key, event, source_version)


def diff(previous: Mapping[str, ObservedObject], current: Sequence[ObservedObject]) -> list[Change]:
    """What happened between two observations: deletions first (pods first, namespaces
    last), then the new and changed objects in `current`'s order.

    An object whose uid changed under the same key was deleted and made again, as the API
    server would report it. Only facts are compared: a new source version alone (a status
    change knm does not read) is no change.
    """
    now = {obj.key: obj for obj in current}
    gone = [
        deletion_of(before)
        for key, before in previous.items()
        if key not in now or now[key].event.uid != before.event.uid
    ]
    gone.sort(key=lambda deletion: _DELETION_ORDER[type(deletion.event)])
    changed = [
        obj
        for obj in now.values()
        # Most objects are the very ones compared last time: identity settles them cheaply.
        if (before := previous.get(obj.key)) is None
        or (before is not obj and before.event != obj.event)
    ]
    return [*gone, *changed]


class ManifestSource:
    """The cluster that manifest files and folders describe, read afresh on each snapshot.

    Controllers run their pods and pods run on `nodes` simulated nodes (see `expand`).
    """

    def __init__(
        self,
        paths: Sequence[Path],
        *,
        nodes: int = DEFAULT_NODES,
        underlay: IPv4Network = DEFAULT_UNDERLAY,
    ) -> None:
        # Refuse a bad configuration now rather than on the first read.
        check_simulation(nodes=nodes, underlay=underlay)
        self._paths = tuple(paths)
        self._nodes = nodes
        self._underlay = underlay
        self._node_names = simulated_nodes(nodes)
        # Each warning is logged once in the source's life, not on every re-read.
        self._warned: set[str] = set()

    def snapshot(self) -> list[ObservedObject]:
        """Namespaces, nodes, controllers, services, pods; raises BadManifestError."""
        declarations = declared_objects(load_documents(self._paths))
        for line in declarations.warnings:
            if line not in self._warned:
                self._warned.add(line)
                log.warning("%s", line, extra={"paths": [str(path) for path in self._paths]})
        cluster = expand(declarations.objects, nodes=self._nodes, underlay=self._underlay)
        self._node_names = [node.meta.name for node in cluster.nodes]
        return [
            observed(fact_of(obj))
            for group in (
                cluster.namespaces,
                cluster.nodes,
                cluster.controllers,
                cluster.services,
                cluster.pods,
            )
            for obj in group
        ]

    def nodes(self) -> list[str]:
        """The simulated nodes, and those the last snapshot found pods pinned to."""
        return list(self._node_names)
