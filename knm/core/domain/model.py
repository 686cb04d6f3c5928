"""Plain data of the network model: what the cluster says, and what knm decided.

Everything here is an immutable value. Mappings are never mutated after construction;
records are replaced, not edited, so that an old reference is a faithful "before".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network

EMPTY: Mapping[str, str] = {}

# A collection is named within a namespace; a `uses` target may be in another one.
CollectionRef = tuple[str, str]  # (namespace, collection)
NetworkKey = tuple[str, str]  # (kind, name)


class NetworkKind(StrEnum):
    POD = "pod"
    SERVICE = "service"


class AddressKind(StrEnum):
    POD = "pod"
    SERVICE = "service"
    FLOATING = "floating"
    # A LoadBalancer service's address from the public pools (its ingress).
    PUBLIC = "public"


class AddressAction(StrEnum):
    ALLOCATED = "allocated"
    RELEASED = "released"


TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True, slots=True)
class NetworkSettings:
    pod_pools: tuple[IPv4Network, ...] = (IPv4Network("10.0.0.0/16"),)
    block_prefix: int = 26
    service_pools: tuple[IPv4Network, ...] = (IPv4Network("10.254.0.0/16"),)
    # LoadBalancer services' ingress addresses, as the original manager's public network.
    public_pools: tuple[IPv4Network, ...] = (IPv4Network("10.1.0.0/16"),)
    gateway: IPv4Address = IPv4Address("169.254.1.1")
    collection_label: str = "name"
    uses_label: str = "uses"
    uses_annotation: str = "knm.io/uses"
    quarantine: timedelta = timedelta(seconds=60)
    tombstone_retention: timedelta = timedelta(hours=24)

    def __post_init__(self) -> None:
        for pool in self.pod_pools:
            if self.block_prefix < pool.prefixlen:
                raise ValueError(
                    f"block prefix /{self.block_prefix} is larger than pod pool {pool}"
                )
        pools = [*self.pod_pools, *self.service_pools, *self.public_pools]
        for i, a in enumerate(pools):
            for b in pools[i + 1 :]:
                if a.overlaps(b):
                    raise ValueError(f"address pools {a} and {b} overlap")
        if not self.gateway.is_link_local:
            raise ValueError(f"gateway {self.gateway} is not a link-local address")
        if self.quarantine < timedelta(0):
            raise ValueError("quarantine must not be negative")


@dataclass(frozen=True, slots=True)
class Cause:
    """The fact a decision was made for: its id and the time it happened."""

    fact_id: str
    at: datetime


# ---- what the cluster says ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OwnerRef:
    kind: str
    name: str
    uid: str


@dataclass(frozen=True, slots=True)
class ContainerPort:
    port: int
    protocol: str = "TCP"
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ServicePort:
    port: int
    protocol: str = "TCP"
    target_port: int | str | None = None
    name: str | None = None

    @property
    def target(self) -> int | str:
        return self.port if self.target_port is None else self.target_port


@dataclass(frozen=True, slots=True)
class Namespace:
    name: str
    uid: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    uid: str
    address: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Pod:
    uid: str
    namespace: str
    name: str
    node: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    host_network: bool = False
    phase: str = "Pending"
    ready: bool = True
    # Immediate owner first, topmost controller last.
    owners: tuple[OwnerRef, ...] = ()
    ports: tuple[ContainerPort, ...] = ()


@dataclass(frozen=True, slots=True)
class Service:
    uid: str
    namespace: str
    name: str
    selector: Mapping[str, str] | None = None
    ports: tuple[ServicePort, ...] = ()
    # What the cluster set in spec.clusterIP; None when it set nothing.
    cluster_ip: str | None = None
    headless: bool = False
    type: str = "ClusterIP"


# ---- what knm decided ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PodRecord:
    spec: Pod
    version: int | None
    collection: str
    uses: tuple[CollectionRef, ...]
    network: str | None
    ip: IPv4Address | None
    block: str | None

    @property
    def uid(self) -> str:
        return self.spec.uid

    @property
    def namespace(self) -> str:
        return self.spec.namespace

    @property
    def collection_ref(self) -> CollectionRef:
        return (self.spec.namespace, self.collection)


@dataclass(frozen=True, slots=True)
class ServiceRecord:
    spec: Service
    version: int | None
    vip: IPv4Address | None
    # "cluster" when Kubernetes chose the VIP, "allocated" when knm did.
    vip_source: str | None
    network: str | None
    # A LoadBalancer service's address from the public pools; always knm's own.
    public_ip: IPv4Address | None = None

    @property
    def uid(self) -> str:
        return self.spec.uid


@dataclass(frozen=True, slots=True)
class BlockRecord:
    cidr: str
    pool: str
    node: str


@dataclass(frozen=True, slots=True)
class NetworkRecord:
    kind: NetworkKind
    name: str
    namespace: str
    # The collection (pod networks) or the service (service networks) it exists for.
    subject: str

    @property
    def key(self) -> NetworkKey:
        return (self.kind.value, self.name)


@dataclass(frozen=True, slots=True)
class FloatingIpRecord:
    vip: IPv4Address
    service_uid: str
    pod_uid: str


@dataclass(frozen=True, slots=True)
class PolicyPort:
    port: int
    protocol: str


@dataclass(frozen=True, slots=True)
class PolicyRecord:
    name: str
    from_network: str
    to_network: str
    service_uid: str
    ports: tuple[PolicyPort, ...]


@dataclass(frozen=True, slots=True)
class QuarantineRecord:
    ip: IPv4Address
    pool: str
    released_at: datetime
    until: datetime


@dataclass(frozen=True, slots=True)
class TombstoneRecord:
    uid: str
    kind: str
    namespace: str
    name: str
    deleted_at: datetime


@dataclass(frozen=True, slots=True)
class AddressEvent:
    """One line of the append-only allocation history."""

    action: AddressAction
    ip: IPv4Address
    kind: AddressKind
    pool: str | None
    namespace: str
    name: str
    uid: str
    network: str | None
    node: str | None
    # For floating IPs: the service ("<ns>/<name>") whose VIP the pod carries.
    service: str | None
    at: datetime
    fact_id: str


@dataclass(frozen=True, slots=True)
class Problem:
    """A fact that could not be honoured in full; the rest of the model still converges."""

    code: str
    subject: str
    message: str


@dataclass(slots=True)
class Foreign:
    """Records another allocator changed, as they now stand (None: deleted)."""

    namespaces: dict[str, Namespace | None] = field(default_factory=dict)
    nodes: dict[str, Node | None] = field(default_factory=dict)
    pods: dict[str, PodRecord | None] = field(default_factory=dict)
    services: dict[str, ServiceRecord | None] = field(default_factory=dict)
    blocks: dict[str, BlockRecord | None] = field(default_factory=dict)
    networks: dict[NetworkKey, NetworkRecord | None] = field(default_factory=dict)
    floating: dict[tuple[str, str], FloatingIpRecord | None] = field(default_factory=dict)
    policies: dict[str, PolicyRecord | None] = field(default_factory=dict)
    quarantine: dict[IPv4Address, QuarantineRecord | None] = field(default_factory=dict)
    tombstones: dict[str, TombstoneRecord | None] = field(default_factory=dict)
