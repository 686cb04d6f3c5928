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


class EndpointPortSpec(Value):
    # None: every port (the API allows an unset port on a slice of a selector-less service).
    port: int | None = None
    protocol: str = "TCP"
    name: str | None = None


class EndpointSpec(Value):
    addresses: tuple[str, ...]
    # Conditions as the API serves them; unset ready and serving read as true (as the API
    # says consumers should), unset terminating as false.
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    node: str | None = None
    # The pod behind the endpoint, when the slice names one (targetRef of kind Pod).
    pod_uid: str | None = None
    pod_name: str | None = None


class EndpointSliceObserved(Event):
    """A discovery.k8s.io/v1 EndpointSlice: part of a service's endpoints, as the cluster's
    endpoint-slice controller (or another manager) wrote them."""

    TYPE: ClassVar[str] = "EndpointSliceObserved"
    uid: str
    namespace: str
    name: str
    # The label kubernetes.io/service-name: the service the slice belongs to.
    service: str | None = None
    address_type: str = "IPv4"
    labels: dict[str, str] = Field(default_factory=dict)
    ports: tuple[EndpointPortSpec, ...] = ()
    endpoints: tuple[EndpointSpec, ...] = ()


class EndpointSliceDeleted(Event):
    TYPE: ClassVar[str] = "EndpointSliceDeleted"
    uid: str
    namespace: str
    name: str


class SelectorRequirementSpec(Value):
    key: str
    # In, NotIn, Exists, DoesNotExist.
    operator: str
    values: tuple[str, ...] = ()


class LabelSelectorSpec(Value):
    """A LabelSelector in full; empty selects everything."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: tuple[SelectorRequirementSpec, ...] = ()


class IpBlockSpec(Value):
    cidr: str
    excepts: tuple[str, ...] = ()


class NetworkPolicyPeerSpec(Value):
    pod_selector: LabelSelectorSpec | None = None
    namespace_selector: LabelSelectorSpec | None = None
    ip_block: IpBlockSpec | None = None


class NetworkPolicyPortSpec(Value):
    protocol: str = "TCP"
    # A number, a named container port, or None for every port.
    port: int | str | None = None
    end_port: int | None = None


class NetworkPolicyRuleSpec(Value):
    # `from` of an ingress rule, `to` of an egress rule; empty matches every peer.
    peers: tuple[NetworkPolicyPeerSpec, ...] = ()
    # Empty matches every port.
    ports: tuple[NetworkPolicyPortSpec, ...] = ()


class NetworkPolicyObserved(Event):
    """A networking.k8s.io/v1 NetworkPolicy, its spec in full."""

    TYPE: ClassVar[str] = "NetworkPolicyObserved"
    uid: str
    namespace: str
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    pod_selector: LabelSelectorSpec = LabelSelectorSpec()
    # "Ingress" and/or "Egress", as the API defaulted them.
    policy_types: tuple[str, ...] = ()
    ingress: tuple[NetworkPolicyRuleSpec, ...] = ()
    egress: tuple[NetworkPolicyRuleSpec, ...] = ()


class NetworkPolicyDeleted(Event):
    TYPE: ClassVar[str] = "NetworkPolicyDeleted"
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
    EndpointSliceObserved,
    EndpointSliceDeleted,
    NetworkPolicyObserved,
    NetworkPolicyDeleted,
)
