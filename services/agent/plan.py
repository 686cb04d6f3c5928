"""From one vrouter program to the next: the operations a dataplane performs, in order.

Pure: the recording dataplane records these, the Linux dataplane (a later issue) will
execute them. The order is chosen so that no moment in between grants more than either
program: access is revoked first, sets exist before the rules that name them, and
access is granted last.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeAlias

from knm.core.events.vrouter import Allow, OverlayConfigured, VipMap, VrouterConfigured
from services.agent.dataplane import PodInterface


@dataclass(frozen=True, slots=True)
class AttachInterface:
    iface: PodInterface


@dataclass(frozen=True, slots=True)
class DetachInterface:
    pod_uid: str
    ifname: str


@dataclass(frozen=True, slots=True)
class SetGateway:
    address: str


@dataclass(frozen=True, slots=True, order=True)
class LocalRoute:
    """A host route to a pod on this node, through its veth."""

    ip: str
    ifname: str


@dataclass(frozen=True, slots=True, order=True)
class OverlayRoute:
    """A remote node's block, reached through a tunnel to that node's address."""

    block: str
    node: str
    via: str


@dataclass(frozen=True, slots=True)
class AddLocalRoute:
    route: LocalRoute


@dataclass(frozen=True, slots=True)
class RemoveLocalRoute:
    route: LocalRoute


@dataclass(frozen=True, slots=True)
class AddOverlayRoute:
    route: OverlayRoute


@dataclass(frozen=True, slots=True)
class RemoveOverlayRoute:
    route: OverlayRoute


@dataclass(frozen=True, slots=True)
class UpdateNetwork:
    """Create the network's member set if it is new, then add and remove members."""

    network: str
    added: tuple[str, ...]
    removed: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RemoveNetwork:
    network: str


@dataclass(frozen=True, slots=True)
class SetVip:
    """Install or replace the load-balancing map of one VIP."""

    vip: VipMap


@dataclass(frozen=True, slots=True)
class RemoveVip:
    vip: str


@dataclass(frozen=True, slots=True)
class AddAllow:
    allow: Allow


@dataclass(frozen=True, slots=True)
class RemoveAllow:
    allow: Allow


Op: TypeAlias = (
    AttachInterface
    | DetachInterface
    | SetGateway
    | AddLocalRoute
    | RemoveLocalRoute
    | AddOverlayRoute
    | RemoveOverlayRoute
    | UpdateNetwork
    | RemoveNetwork
    | SetVip
    | RemoveVip
    | AddAllow
    | RemoveAllow
)


def plan_program(
    previous: VrouterConfigured | None,
    desired: VrouterConfigured,
    *,
    overlay_before: OverlayConfigured | None,
    overlay_after: OverlayConfigured,
    node: str,
) -> list[Op]:
    """The operations that turn `previous` (None: nothing programmed) into `desired`."""
    routes_before = local_routes(previous) if previous is not None else set()
    routes_after = local_routes(desired)
    tunnels_before = overlay_routes(overlay_before, node=node) if overlay_before else {}
    tunnels_after = overlay_routes(overlay_after, node=node)
    tunnels_gone = {r for b, r in tunnels_before.items() if tunnels_after.get(b) != r}
    tunnels_new = {r for b, r in tunnels_after.items() if tunnels_before.get(b) != r}
    members_before = network_members(previous) if previous is not None else {}
    members_after = network_members(desired)
    vips_before = vip_maps(previous) if previous is not None else {}
    vips_after = vip_maps(desired)
    allows_before = set(previous.allows) if previous is not None else set()
    allows_after = set(desired.allows)

    ops: list[Op] = []
    ops += [RemoveAllow(a) for a in sorted(allows_before - allows_after, key=_allow_key)]
    ops += [RemoveVip(vip) for vip in sorted(vips_before.keys() - vips_after.keys())]
    ops += [RemoveLocalRoute(r) for r in sorted(routes_before - routes_after)]
    ops += [RemoveOverlayRoute(r) for r in sorted(tunnels_gone)]
    if previous is None or previous.gateway != desired.gateway:
        ops.append(SetGateway(desired.gateway))
    for network, members in sorted(members_after.items()):
        before = members_before.get(network)
        if before != members:
            old = before or frozenset()
            ops.append(
                UpdateNetwork(
                    network=network,
                    added=tuple(sorted(members - old)),
                    removed=tuple(sorted(old - members)),
                )
            )
    ops += [AddLocalRoute(r) for r in sorted(routes_after - routes_before)]
    ops += [AddOverlayRoute(r) for r in sorted(tunnels_new)]
    ops += [
        SetVip(vip_map)
        for vip, vip_map in sorted(vips_after.items())
        if vips_before.get(vip) != vip_map
    ]
    ops += [AddAllow(a) for a in sorted(allows_after - allows_before, key=_allow_key)]
    ops += [RemoveNetwork(n) for n in sorted(members_before.keys() - members_after.keys())]
    return ops


def local_routes(config: VrouterConfigured) -> set[LocalRoute]:
    return {LocalRoute(ip=i.ip, ifname=i.ifname) for i in config.interfaces}


def overlay_routes(overlay: OverlayConfigured, *, node: str) -> dict[str, OverlayRoute]:
    """Route per remote block; the node's own blocks and unaddressed nodes get none."""
    routes: dict[str, OverlayRoute] = {}
    for remote in sorted(overlay.nodes, key=lambda n: n.name):
        if remote.name == node or remote.address is None:
            continue
        for block in remote.blocks:
            # A block claimed twice (a transient of reassignment) goes to the first name.
            route = OverlayRoute(block=block, node=remote.name, via=remote.address)
            routes.setdefault(block, route)
    return routes


def network_members(config: VrouterConfigured) -> dict[str, frozenset[str]]:
    return {network.name: frozenset(network.members) for network in config.networks}


def vip_maps(config: VrouterConfigured) -> Mapping[str, VipMap]:
    return {vip_map.vip: vip_map for vip_map in config.services}


def _allow_key(allow: Allow) -> tuple[object, ...]:
    return (
        allow.from_network,
        allow.vip,
        allow.service,
        allow.declared,
        tuple((p.port, p.protocol) for p in allow.ports),
    )
