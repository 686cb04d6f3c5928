"""Intents as the allocator writes them, for tests: a two-tier shop and helpers."""

from __future__ import annotations

from datetime import UTC, datetime

from knm.core.bus.memory import MemoryBus
from knm.core.bus.protocol import OutgoingMessage
from knm.core.events.base import Envelope, Event, envelope
from knm.core.events.codec import encode
from knm.core.events.commands import AttachRequested, DetachRequested
from knm.core.events.facts import ServicePortSpec
from knm.core.events.intents import (
    Backend,
    BackendPort,
    BlockDeclared,
    BlockWithdrawn,
    InterfaceDeclared,
    InterfaceWithdrawn,
    NetworkDeclared,
    NetworkWithdrawn,
    NodeDeclared,
    NodeWithdrawn,
    PolicyDeclared,
    PolicyPortSpec,
    PolicyWithdrawn,
    ServiceDeclared,
    ServiceWithdrawn,
)
from knm.core.topics import Topics

AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
GATEWAY = "169.254.1.1"
TOPICS = Topics(prefix="test.")


def interface(uid: str, *, node: str, network: str, ip: str) -> InterfaceDeclared:
    namespace, _, collection = network.partition("/")
    octets = [int(part) for part in ip.split(".")]
    return InterfaceDeclared(
        pod_uid=uid,
        namespace=namespace,
        name=f"{collection}-{uid}",
        node=node,
        network=network,
        ip=ip,
        mac="0a:58:" + ":".join(f"{o:02x}" for o in octets),
        gateway=GATEWAY,
        ifname=f"knm{uid}",
    )


def withdrawn(declared: InterfaceDeclared) -> InterfaceWithdrawn:
    return InterfaceWithdrawn(
        pod_uid=declared.pod_uid,
        namespace=declared.namespace,
        name=declared.name,
        node=declared.node,
    )


def attach(pod: InterfaceDeclared) -> AttachRequested:
    return AttachRequested(
        node=pod.node,
        pod_uid=pod.pod_uid,
        namespace=pod.namespace,
        name=pod.name,
        network=pod.network,
        ip=pod.ip,
        mac=pod.mac,
        gateway=pod.gateway,
        ifname=pod.ifname,
    )


def detach(pod: InterfaceDeclared) -> DetachRequested:
    return DetachRequested(
        node=pod.node,
        pod_uid=pod.pod_uid,
        namespace=pod.namespace,
        name=pod.name,
        ifname=pod.ifname,
    )


def backend_of(pod: InterfaceDeclared, *, port: int = 80, target: int = 8080) -> Backend:
    return Backend(
        pod_uid=pod.pod_uid,
        namespace=pod.namespace,
        name=pod.name,
        ip=pod.ip,
        node=pod.node,
        network=pod.network,
        ports=(BackendPort(port=port, protocol="TCP", target_port=target),),
    )


def service(
    uid: str,
    *,
    namespace: str,
    name: str,
    vip: str,
    backends: tuple[InterfaceDeclared, ...],
    port: int = 80,
    target: int = 8080,
) -> ServiceDeclared:
    return ServiceDeclared(
        uid=uid,
        namespace=namespace,
        name=name,
        vip=vip,
        network=f"{namespace}/service-{name}",
        ports=(ServicePortSpec(port=port, protocol="TCP", target_port=target),),
        backends=tuple(backend_of(pod, port=port, target=target) for pod in backends),
    )


def uses(from_network: str, target: ServiceDeclared) -> PolicyDeclared:
    assert target.network is not None
    return PolicyDeclared(
        name=f"{from_network}->{target.network}",
        from_network=from_network,
        to_network=target.network,
        service_uid=target.uid,
        ports=tuple(PolicyPortSpec(port=p.port, protocol=p.protocol) for p in target.ports),
    )


def intent_key(event: Event) -> str:
    """The envelope key the allocator gives an intent (or command): one object, one key."""
    match event:
        case InterfaceDeclared() | InterfaceWithdrawn():
            return f"interface/{event.pod_uid}"
        case ServiceDeclared() | ServiceWithdrawn():
            return f"service/{event.uid}"
        case PolicyDeclared() | PolicyWithdrawn():
            return f"policy/{event.name}"
        case BlockDeclared() | BlockWithdrawn():
            return f"block/{event.cidr}"
        case NodeDeclared() | NodeWithdrawn():
            return f"node/{event.name}"
        case NetworkDeclared() | NetworkWithdrawn():
            return f"network/{event.kind}/{event.name}"
        case AttachRequested() | DetachRequested():
            return f"interface/{event.pod_uid}"
    raise AssertionError(f"not an intent: {event!r}")


def publish(bus: MemoryBus, topic: str, events: list[Event]) -> list[Envelope]:
    """Publish as the allocator does: commands go under their node's key."""
    messages = [envelope(event, key=intent_key(event), occurred_at=AT) for event in events]
    bus.publisher().publish(
        [
            OutgoingMessage(topic=topic, key=_bus_key(message), value=encode(message))
            for message in messages
        ]
    )
    return messages


def _bus_key(message: Envelope) -> str:
    payload = message.payload
    if isinstance(payload, AttachRequested | DetachRequested):
        return payload.node
    return message.key


class Shop:
    """Three tiers on three nodes: frontend uses redis; billing is unrelated.

    Node n1 runs frontend, n2 redis, n3 billing; each tier has a service of its own.
    """

    def __init__(self) -> None:
        self.frontend = (
            interface("f1", node="n1", network="shop/frontend", ip="10.0.0.2"),
            interface("f2", node="n1", network="shop/frontend", ip="10.0.0.3"),
        )
        self.redis = (interface("r1", node="n2", network="shop/redis", ip="10.0.0.66"),)
        self.billing = (interface("b1", node="n3", network="shop/billing", ip="10.0.0.130"),)
        self.frontend_service = service(
            "svc-f", namespace="shop", name="frontend", vip="10.254.0.20", backends=self.frontend
        )
        self.redis_service = service(
            "svc-r",
            namespace="shop",
            name="redis",
            vip="10.254.0.10",
            backends=self.redis,
            port=6379,
            target=6379,
        )
        self.billing_service = service(
            "svc-b", namespace="shop", name="billing", vip="10.254.0.30", backends=self.billing
        )
        self.policy = uses("shop/frontend", self.redis_service)
        self.nodes = (
            NodeDeclared(name="n1", address="192.168.0.1"),
            NodeDeclared(name="n2", address="192.168.0.2"),
            NodeDeclared(name="n3", address="192.168.0.3"),
        )
        self.blocks = (
            BlockDeclared(cidr="10.0.0.0/26", node="n1"),
            BlockDeclared(cidr="10.0.0.64/26", node="n2"),
            BlockDeclared(cidr="10.0.0.128/26", node="n3"),
        )

    def intents(self) -> list[Event]:
        return [
            *self.nodes,
            *self.blocks,
            *self.frontend,
            *self.redis,
            *self.billing,
            self.frontend_service,
            self.redis_service,
            self.billing_service,
            self.policy,
        ]
