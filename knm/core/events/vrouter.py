"""Vrouter configuration from the applier's native backend to the agents. Topic `vrouter`.

A node's program travels in pieces, each under its own key on the compacted topic, so
that a change costs the agents what changed and not the size of the cluster:
`VrouterNodeConfigured` (key `<node>`: gateway and local interfaces), one
`NetworkMembersConfigured` per network the node needs the members of (`<node>/network/<name>`)
and one `VipConfigured` per VIP it serves or reaches, with the allows into it
(`<node>/vip/<vip>`). A piece that is no longer wanted is replaced by its `...Withdrawn`.
`OverlayConfigured` is the cluster-wide table of nodes and their blocks. Each message is
a snapshot of its piece: the newest one per key is the truth.

`VrouterConfigured`, one node's whole program in one message, is what earlier versions
published under the node's key; agents still take it as a replacement of every piece.
"""

from __future__ import annotations

from typing import ClassVar

from knm.core.events.base import Event, Value
from knm.core.events.intents import PolicyPortSpec


class LocalInterface(Value):
    pod_uid: str
    namespace: str
    name: str
    ip: str
    mac: str
    ifname: str
    network: str


class NetworkMembers(Value):
    name: str
    members: tuple[str, ...]


class VipBackend(Value):
    ip: str
    node: str
    # Service port -> the port on this backend (named target ports already resolved).
    target_ports: tuple[tuple[int, str, int], ...]


class VipMap(Value):
    namespace: str
    name: str
    vip: str
    network: str
    ports: tuple[PolicyPortSpec, ...]
    backends: tuple[VipBackend, ...]


class Allow(Value):
    """Pods of `from_network` may open connections to `vip` on `ports`."""

    from_network: str
    vip: str
    service: str
    ports: tuple[PolicyPortSpec, ...]
    # True for a `uses` policy, False for a service of the collection's own.
    declared: bool


class VrouterConfigured(Event):
    TYPE: ClassVar[str] = "VrouterConfigured"
    node: str
    revision: str
    gateway: str
    interfaces: tuple[LocalInterface, ...] = ()
    networks: tuple[NetworkMembers, ...] = ()
    services: tuple[VipMap, ...] = ()
    allows: tuple[Allow, ...] = ()


class VrouterNodeConfigured(Event):
    TYPE: ClassVar[str] = "VrouterNodeConfigured"
    node: str
    gateway: str
    interfaces: tuple[LocalInterface, ...] = ()


class NetworkMembersConfigured(Event):
    """The members of a network whose pods the node's pods may reach."""

    TYPE: ClassVar[str] = "NetworkMembersConfigured"
    node: str
    network: NetworkMembers


class NetworkMembersWithdrawn(Event):
    TYPE: ClassVar[str] = "NetworkMembersWithdrawn"
    node: str
    name: str


class VipConfigured(Event):
    """A VIP the node serves or reaches: its backends, and who may open connections to
    it from (or, on a node hosting a backend, to) this node."""

    TYPE: ClassVar[str] = "VipConfigured"
    node: str
    vip: VipMap
    allows: tuple[Allow, ...] = ()


class VipWithdrawn(Event):
    TYPE: ClassVar[str] = "VipWithdrawn"
    node: str
    vip: str


class OverlayNode(Value):
    name: str
    address: str | None
    blocks: tuple[str, ...]


class OverlayConfigured(Event):
    TYPE: ClassVar[str] = "OverlayConfigured"
    revision: str
    nodes: tuple[OverlayNode, ...] = ()


VrouterPiece = (
    VrouterNodeConfigured
    | NetworkMembersConfigured
    | NetworkMembersWithdrawn
    | VipConfigured
    | VipWithdrawn
)

VROUTER: tuple[type[Event], ...] = (
    VrouterConfigured,
    VrouterNodeConfigured,
    NetworkMembersConfigured,
    NetworkMembersWithdrawn,
    VipConfigured,
    VipWithdrawn,
    OverlayConfigured,
)
