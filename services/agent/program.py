"""One node's vrouter program, folded from its pieces on the vrouter topic.

Pure: `take` folds one message and answers which pieces it changed, so that a dataplane
touches only those; a message that changes nothing changes no piece. A piece is the
node's own part (gateway and interfaces), a network's members, or a VIP with its allows.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from knm.core.events.base import Event
from knm.core.events.vrouter import (
    Allow,
    LocalInterface,
    NetworkMembers,
    NetworkMembersConfigured,
    NetworkMembersWithdrawn,
    VipConfigured,
    VipMap,
    VipWithdrawn,
    VrouterConfigured,
    VrouterNodeConfigured,
)

Piece = tuple[str, str]  # ("node", ""), ("network", name) or ("vip", address)
_V = TypeVar("_V")
NODE: Piece = ("node", "")


def network_piece(name: str) -> Piece:
    return ("network", name)


def vip_piece(address: str) -> Piece:
    return ("vip", address)


@dataclass(frozen=True, slots=True)
class VipEntry:
    vip_map: VipMap
    allows: tuple[Allow, ...]


@dataclass(slots=True)
class NodeProgram:
    node: str
    # None until the node's own piece came: without it there is nothing to program.
    gateway: str | None = None
    interfaces: tuple[LocalInterface, ...] = ()
    networks: dict[str, tuple[str, ...]] = field(default_factory=dict)
    vips: dict[str, VipEntry] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.gateway is not None

    def pieces(self) -> Iterator[Piece]:
        yield NODE
        yield from (network_piece(name) for name in self.networks)
        yield from (vip_piece(address) for address in self.vips)

    def has(self, piece: Piece) -> bool:
        kind, name = piece
        if kind == "node":
            return True
        return name in (self.networks if kind == "network" else self.vips)

    def take(self, payload: Event) -> set[Piece]:
        """Fold one message of this node; the pieces whose content it changed."""
        match payload:
            case VrouterNodeConfigured():
                return self._node(payload.gateway, payload.interfaces)
            case NetworkMembersConfigured():
                return self._network(payload.network.name, payload.network.members)
            case NetworkMembersWithdrawn():
                return self._network(payload.name, None)
            case VipConfigured():
                return self._vip(payload.vip.vip, VipEntry(payload.vip, payload.allows))
            case VipWithdrawn():
                return self._vip(payload.vip, None)
            case VrouterConfigured():
                return self._replace(payload)
            case _:
                return set()

    def _node(self, gateway: str, interfaces: tuple[LocalInterface, ...]) -> set[Piece]:
        if (gateway, interfaces) == (self.gateway, self.interfaces):
            return set()
        self.gateway, self.interfaces = gateway, interfaces
        return {NODE}

    def _network(self, name: str, members: tuple[str, ...] | None) -> set[Piece]:
        return _put(self.networks, name, members, network_piece(name))

    def _vip(self, address: str, entry: VipEntry | None) -> set[Piece]:
        return _put(self.vips, address, entry, vip_piece(address))

    def _replace(self, config: VrouterConfigured) -> set[Piece]:
        """A whole program (as earlier versions sent it) replaces every piece."""
        changed = self._node(config.gateway, config.interfaces)
        networks = {n.name: n.members for n in config.networks}
        for name in [*self.networks.keys() - networks.keys(), *networks]:
            changed |= self._network(name, networks.get(name))
        allows: dict[str, list[Allow]] = {}
        for allow in config.allows:
            allows.setdefault(allow.vip, []).append(allow)
        vips = {v.vip: VipEntry(v, tuple(allows.get(v.vip, ()))) for v in config.services}
        for address in [*self.vips.keys() - vips.keys(), *vips]:
            changed |= self._vip(address, vips.get(address))
        return changed

    def assemble(self) -> VrouterConfigured:
        """The whole program as one message: for dataplanes that diff whole programs
        (the recording one) and for reports. Costs the size of the program."""
        vips = [self.vips[address] for address in sorted(self.vips, key=_numeric)]
        return VrouterConfigured(
            node=self.node,
            revision="",
            gateway=self.gateway or "",
            interfaces=self.interfaces,
            networks=tuple(
                NetworkMembers(name=name, members=members)
                for name, members in sorted(self.networks.items())
            ),
            services=tuple(entry.vip_map for entry in vips),
            allows=tuple(allow for entry in vips for allow in entry.allows),
        )


def _put(mapping: dict[str, _V], key: str, value: _V | None, piece: Piece) -> set[Piece]:
    """Set (or, with None, remove) one piece's content; the piece if that changed it."""
    if mapping.get(key) == value:
        return set()
    if value is None:
        del mapping[key]
    else:
        mapping[key] = value
    return {piece}


def _numeric(address: str) -> tuple[int, str]:
    try:
        return (int(ipaddress.IPv4Address(address)), address)
    except ValueError:
        return (1 << 32, address)
