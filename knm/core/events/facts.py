"""Facts: what the watcher saw in the cluster (or in manifests). Published on `facts`."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from knm.core.events.base import Event, Value


class OwnerReference(Value):
    kind: str
    name: str
    uid: str


class ContainerPortSpec(Value):
    port: int
    protocol: str = "TCP"
    name: str | None = None


class ServicePortSpec(Value):
    port: int
    protocol: str = "TCP"
    target_port: int | str | None = None
    name: str | None = None


class NamespaceObserved(Event):
    TYPE: ClassVar[str] = "NamespaceObserved"
    name: str
    uid: str
    labels: dict[str, str] = Field(default_factory=dict)


class NamespaceDeleted(Event):
    TYPE: ClassVar[str] = "NamespaceDeleted"
    name: str
    uid: str


class NodeObserved(Event):
    TYPE: ClassVar[str] = "NodeObserved"
    name: str
    uid: str
    # The node's underlay address (its InternalIP), the overlay's tunnel endpoint.
    address: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class NodeDeleted(Event):
    TYPE: ClassVar[str] = "NodeDeleted"
    name: str
    uid: str


class PodObserved(Event):
    TYPE: ClassVar[str] = "PodObserved"
    uid: str
    namespace: str
    name: str
    node: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    host_network: bool = False
    phase: str = "Pending"
    ready: bool = True
    # Immediate owner first, the topmost controller last.
    owners: tuple[OwnerReference, ...] = ()
    ports: tuple[ContainerPortSpec, ...] = ()


class PodDeleted(Event):
    TYPE: ClassVar[str] = "PodDeleted"
    uid: str
    namespace: str
    name: str


class ControllerObserved(Event):
    """A ReplicationController, ReplicaSet, Deployment, StatefulSet, DaemonSet or Job."""

    TYPE: ClassVar[str] = "ControllerObserved"
    kind: str
    uid: str
    namespace: str
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    replicas: int | None = None
    selector: dict[str, str] = Field(default_factory=dict)
    owners: tuple[OwnerReference, ...] = ()


class ControllerDeleted(Event):
    TYPE: ClassVar[str] = "ControllerDeleted"
    kind: str
    uid: str
    namespace: str
    name: str


class ServiceObserved(Event):
    TYPE: ClassVar[str] = "ServiceObserved"
    uid: str
    namespace: str
    name: str
    selector: dict[str, str] | None = None
    ports: tuple[ServicePortSpec, ...] = ()
    # spec.clusterIP as the cluster set it; None when unset (knm allocates then).
    cluster_ip: str | None = None
    headless: bool = False
    type: str = "ClusterIP"


class ServiceDeleted(Event):
    TYPE: ClassVar[str] = "ServiceDeleted"
    uid: str
    namespace: str
    name: str


FACTS: tuple[type[Event], ...] = (
    NamespaceObserved,
    NamespaceDeleted,
    NodeObserved,
    NodeDeleted,
    PodObserved,
    PodDeleted,
    ControllerObserved,
    ControllerDeleted,
    ServiceObserved,
    ServiceDeleted,
)
