"""Intents: the desired network configuration, one snapshot per object. Topic `intents`.

Each message replaces the previous one of its key, so the topic can be compacted and a
consumer that reads it from the start knows the whole desired state.
"""

from __future__ import annotations

from typing import ClassVar

from knm.core.events.base import Event, Value
from knm.core.events.facts import ContainerPortSpec, ServicePortSpec


class NetworkDeclared(Event):
    TYPE: ClassVar[str] = "NetworkDeclared"
    kind: str
    name: str
    namespace: str
    subject: str


class NetworkWithdrawn(Event):
    TYPE: ClassVar[str] = "NetworkWithdrawn"
    kind: str
    name: str
    namespace: str


class InterfaceDeclared(Event):
    TYPE: ClassVar[str] = "InterfaceDeclared"
    pod_uid: str
    namespace: str
    name: str
    node: str
    network: str
    ip: str
    mac: str
    gateway: str
    ifname: str
    floating_ips: tuple[str, ...] = ()
    ports: tuple[ContainerPortSpec, ...] = ()


class InterfaceWithdrawn(Event):
    TYPE: ClassVar[str] = "InterfaceWithdrawn"
    pod_uid: str
    namespace: str
    name: str
    node: str


class BackendPort(Value):
    port: int
    protocol: str
    target_port: int


class Backend(Value):
    pod_uid: str
    namespace: str
    name: str
    ip: str
    node: str
    network: str
    ports: tuple[BackendPort, ...] = ()


class ServiceDeclared(Event):
    TYPE: ClassVar[str] = "ServiceDeclared"
    uid: str
    namespace: str
    name: str
    vip: str | None
    network: str | None
    ports: tuple[ServicePortSpec, ...] = ()
    backends: tuple[Backend, ...] = ()
    # A LoadBalancer service's public address: another address of the same backends.
    public_ip: str | None = None


class ServiceWithdrawn(Event):
    TYPE: ClassVar[str] = "ServiceWithdrawn"
    uid: str
    namespace: str
    name: str


class PublicAddressDeclared(Event):
    """A LoadBalancer service's address from the public pools: what its
    status.loadBalancer.ingress says. Key `public/<uid>`."""

    TYPE: ClassVar[str] = "PublicAddressDeclared"
    uid: str
    namespace: str
    name: str
    ip: str


class PublicAddressWithdrawn(Event):
    """The service's public address was released (the service is gone, or no longer a
    LoadBalancer): its ingress is cleared."""

    TYPE: ClassVar[str] = "PublicAddressWithdrawn"
    uid: str
    namespace: str
    name: str
    ip: str


class PolicyPortSpec(Value):
    port: int
    protocol: str


class PolicyDeclared(Event):
    TYPE: ClassVar[str] = "PolicyDeclared"
    name: str
    from_network: str
    to_network: str
    service_uid: str
    ports: tuple[PolicyPortSpec, ...] = ()


class PolicyWithdrawn(Event):
    TYPE: ClassVar[str] = "PolicyWithdrawn"
    name: str


class BlockDeclared(Event):
    TYPE: ClassVar[str] = "BlockDeclared"
    cidr: str
    node: str


class BlockWithdrawn(Event):
    TYPE: ClassVar[str] = "BlockWithdrawn"
    cidr: str
    node: str


class NodeDeclared(Event):
    TYPE: ClassVar[str] = "NodeDeclared"
    name: str
    address: str | None = None


class NodeWithdrawn(Event):
    TYPE: ClassVar[str] = "NodeWithdrawn"
    name: str


class AllocationFailed(Event):
    """A fact the allocator could honour only in part (topic `errors`)."""

    TYPE: ClassVar[str] = "AllocationFailed"
    code: str
    subject: str
    message: str


INTENTS: tuple[type[Event], ...] = (
    NetworkDeclared,
    NetworkWithdrawn,
    InterfaceDeclared,
    InterfaceWithdrawn,
    ServiceDeclared,
    ServiceWithdrawn,
    PublicAddressDeclared,
    PublicAddressWithdrawn,
    PolicyDeclared,
    PolicyWithdrawn,
    BlockDeclared,
    BlockWithdrawn,
    NodeDeclared,
    NodeWithdrawn,
    AllocationFailed,
)
