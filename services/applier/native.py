"""The native backend's compiler: one node's vrouter program, and the overlay table.

Pure functions of the `DesiredModel` (the rules are in its module docstring). Every
list is sorted and the revision is a hash of the content, so the same desired state
always compiles to the same message and an unchanged program is recognisable.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from collections.abc import Iterable
from typing import TypeVar

from knm.core.events.base import Event
from knm.core.events.intents import PolicyPortSpec, ServiceDeclared
from knm.core.events.vrouter import (
    Allow,
    LocalInterface,
    NetworkMembers,
    NetworkMembersConfigured,
    NetworkMembersWithdrawn,
    OverlayConfigured,
    OverlayNode,
    VipBackend,
    VipConfigured,
    VipMap,
    VipWithdrawn,
    VrouterConfigured,
    VrouterNodeConfigured,
    VrouterPiece,
)
from knm.core.topics import network_key, piece_of_key, vip_key
from services.applier.model import DesiredModel, service_network

_Program = TypeVar("_Program", VrouterConfigured, OverlayConfigured)


class SharedParts:
    """Pieces that many nodes' programs share, built once instead of once per node.

    Member sets hold for one sync (call `forget_members` before the next); a VIP map is
    kept as long as the model holds the very same ServiceDeclared it was built from.
    """

    def __init__(self, model: DesiredModel) -> None:
        self._model = model
        self._members: dict[str, tuple[str, ...]] = {}
        self._vips: dict[str, tuple[ServiceDeclared, tuple[VipMap, ...]]] = {}

    def members(self, network: str) -> tuple[str, ...]:
        found = self._members.get(network)
        if found is None:
            found = _sorted_addresses({i.ip for i in self._model.interfaces_in(network)})
            self._members[network] = found
        return found

    def vip_maps(self, service: ServiceDeclared) -> tuple[VipMap, ...]:
        cached = self._vips.get(service.uid)
        if cached is not None and cached[0] is service:
            return cached[1]
        built = vip_maps(service)
        self._vips[service.uid] = (service, built)
        return built

    def forget_members(self) -> None:
        self._members.clear()
        live = self._model.services
        for uid in [uid for uid in self._vips if uid not in live]:
            del self._vips[uid]


def compile_node(
    model: DesiredModel, node: str, *, gateway: str, shared: SharedParts | None = None
) -> VrouterConfigured:
    """The whole program of `node`: its pods, the VIPs and allows they need, the sets."""
    return with_revision(build_node(model, node, gateway=gateway, shared=shared))


def build_node(
    model: DesiredModel, node: str, *, gateway: str, shared: SharedParts | None = None
) -> VrouterConfigured:
    """`compile_node` without the revision (a hash of the whole program)."""
    parts = shared or SharedParts(model)
    local = model.interfaces_on(node)
    local_networks = {interface.network for interface in local}
    ingress = {service.uid for service in model.services_with_backends_on(node)}
    services = _relevant_services(model, local_networks=local_networks, ingress=ingress)
    allows = _allows(model, services, local_networks=local_networks, ingress=ingress)
    member_networks = local_networks | {allow.from_network for allow in allows}
    networks = [
        NetworkMembers(name=network, members=parts.members(network))
        for network in sorted(member_networks)
    ]
    interfaces = sorted(
        (
            LocalInterface(
                pod_uid=i.pod_uid,
                namespace=i.namespace,
                name=i.name,
                ip=i.ip,
                mac=i.mac,
                ifname=i.ifname,
                network=i.network,
            )
            for i in local
        ),
        key=lambda i: (i.namespace, i.name, i.pod_uid),
    )
    vips = sorted(
        (vip for service in services for vip in parts.vip_maps(service)),
        key=lambda v: (_address_key(v.vip), v.namespace, v.name),
    )
    return VrouterConfigured(
        node=node,
        revision="",
        gateway=gateway,
        interfaces=tuple(interfaces),
        networks=tuple(networks),
        services=tuple(vips),
        allows=tuple(sorted(allows, key=_allow_key)),
    )


def _relevant_services(
    model: DesiredModel, *, local_networks: set[str], ingress: set[str]
) -> list[ServiceDeclared]:
    """Services with a VIP that the node's pods reach (own collection or `uses`) or host."""
    uids = set(ingress)
    for network in local_networks:
        uids.update(service.uid for service in model.services_with_backends_in(network))
        for policy in model.policies_from(network):
            uids.update(service.uid for service in model.services_targeted_by(policy))
    return [model.services[uid] for uid in sorted(uids) if model.services[uid].vip is not None]


def _allows(
    model: DesiredModel,
    services: list[ServiceDeclared],
    *,
    local_networks: set[str],
    ingress: set[str],
) -> set[Allow]:
    allows: set[Allow] = set()
    for service in services:
        label = f"{service.namespace}/{service.name}"
        # A node hosting a backend enforces every source of the service; the other
        # nodes only the sources among their own pods.
        everyone = service.uid in ingress
        # The public address of a LoadBalancer is the same service: the same allows.
        for address in service_addresses(service):
            for policy in model.policies_into(service):
                if everyone or policy.from_network in local_networks:
                    allows.add(
                        Allow(
                            from_network=policy.from_network,
                            vip=address,
                            service=label,
                            ports=_ports(policy.ports),
                            declared=True,
                        )
                    )
            for network in {backend.network for backend in service.backends}:
                if everyone or network in local_networks:
                    allows.add(
                        Allow(
                            from_network=network,
                            vip=address,
                            service=label,
                            ports=service_ports(service),
                            declared=False,
                        )
                    )
    return allows


def service_addresses(service: ServiceDeclared) -> tuple[str, ...]:
    """The VIP, and a LoadBalancer's public address: both lead to the same backends."""
    assert service.vip is not None
    return (service.vip,) if service.public_ip is None else (service.vip, service.public_ip)


def node_pieces(config: VrouterConfigured) -> dict[str, VrouterPiece]:
    """A node's program as the pieces it travels in, by bus key: the node's own part, a
    piece per network, a piece per VIP with the allows into it."""
    node = config.node
    pieces: dict[str, VrouterPiece] = {
        node: VrouterNodeConfigured(node=node, gateway=config.gateway, interfaces=config.interfaces)
    }
    for network in config.networks:
        pieces[network_key(node, network.name)] = NetworkMembersConfigured(
            node=node, network=network
        )
    allows: dict[str, list[Allow]] = {}
    for allow in config.allows:
        allows.setdefault(allow.vip, []).append(allow)
    for vip in config.services:
        pieces[vip_key(node, vip.vip)] = VipConfigured(
            node=node, vip=vip, allows=tuple(allows.get(vip.vip, ()))
        )
    return pieces


def withdrawal(key: str) -> VrouterPiece:
    """What replaces the piece under `key` when its node no longer needs it."""
    node, kind, name = piece_of_key(key)
    if kind == "network":
        return NetworkMembersWithdrawn(node=node, name=name)
    if kind == "vip":
        return VipWithdrawn(node=node, vip=name)
    raise ValueError(f"not the key of a piece that can be withdrawn: {key!r}")


def compile_overlay(model: DesiredModel) -> OverlayConfigured:
    blocks: dict[str, list[str]] = {name: [] for name in model.nodes}
    for block in model.blocks.values():
        blocks.setdefault(block.node, []).append(block.cidr)
    nodes = []
    for name in sorted(blocks):
        declared = model.nodes.get(name)
        nodes.append(
            OverlayNode(
                name=name,
                address=declared.address if declared is not None else None,
                blocks=tuple(sorted(blocks[name], key=_address_key)),
            )
        )
    return with_revision(OverlayConfigured(revision="", nodes=tuple(nodes)))


def vip_maps(service: ServiceDeclared) -> tuple[VipMap, ...]:
    """The service's VIP map, and the same map under its public address if it has one."""
    first = vip_map(service)
    if service.public_ip is None:
        return (first,)
    return (first, first.model_copy(update={"vip": service.public_ip}))


def vip_map(service: ServiceDeclared) -> VipMap:
    assert service.vip is not None
    backends = {
        VipBackend(
            ip=backend.ip,
            node=backend.node,
            target_ports=tuple(sorted((p.port, p.protocol, p.target_port) for p in backend.ports)),
        )
        for backend in service.backends
    }
    return VipMap(
        namespace=service.namespace,
        name=service.name,
        vip=service.vip,
        network=service_network(service),
        ports=service_ports(service),
        backends=tuple(sorted(backends, key=lambda b: (_address_key(b.ip), b.node))),
    )


def service_ports(service: ServiceDeclared) -> tuple[PolicyPortSpec, ...]:
    return _ports(PolicyPortSpec(port=p.port, protocol=p.protocol) for p in service.ports)


def with_revision(event: _Program) -> _Program:
    return event.model_copy(update={"revision": revision_of(event)})


def revision_of(event: Event) -> str:
    """The first 16 hex digits of the SHA-256 of the content's JSON.

    Fields serialize in their declared order and every list is sorted, so the JSON is
    canonical without sorting keys again (which would cost a pass over the program).
    """
    canonical = event.model_dump_json(exclude={"revision"})
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _ports(ports: Iterable[PolicyPortSpec]) -> tuple[PolicyPortSpec, ...]:
    return tuple(sorted(set(ports), key=lambda p: (p.port, p.protocol)))


def _allow_key(allow: Allow) -> tuple[object, ...]:
    return (
        allow.from_network,
        _address_key(allow.vip),
        allow.service,
        allow.declared,
        tuple((p.port, p.protocol) for p in allow.ports),
    )


# Parsing dominates sorting; the same addresses are sorted again in every program.
@functools.lru_cache(maxsize=1 << 16)
def _address_key(text: str) -> tuple[int, int, str]:
    """Numeric order for addresses and networks; anything unparsable sorts after, by text."""
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return (1, 0, text)
    return (0, int(network.network_address), text)


def _sorted_addresses(addresses: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(addresses, key=_address_key))
